//! report — who said what, and when: people's lines and `--json` events.
//!
//! Every line a demo prints comes from here, so every line carries the time since the demo
//! started, the pid and the name of the process that printed it; a thread other than the
//! process's main one is named too, with its kernel thread id (the `LWP` column of `ps -L`, a
//! directory of `/proc/PID/task/`):
//!
//! ```text
//!   0.103s [  4182 buyer-3] bought a ticket (1 -> 0)
//!   0.104s [  4182/4190 LoopThread] thread LoopThread >>> 1
//! ```
//!
//! With `--json` the same moment is one JSON object on one line; `tid` and `thread` say which
//! thread (the main thread's `tid` is the pid):
//!
//! ```text
//! {"t_ms":103,"t_us":103412,"pid":4182,"ppid":4170,"who":"buyer-3","tid":4182,"thread":"main","event":"bought","data":{"before":1,"after":0}}
//! ```
//!
//! Why one `write(2)` per line, straight to file descriptor 1: many processes share the same
//! stdout (a terminal, a pipe or a file). A write of at most `PIPE_BUF` (4096) bytes to a pipe is
//! atomic, so lines from different processes never interleave mid-line; and because nothing is
//! buffered in user space, a `fork` can never copy a half-written line into the child (the
//! classic "printed twice" pitfall that `fork-vs-spawn` shows).
//!
//! The state here is a handful of atomics, not a `Mutex`: a `fork` copies memory but not
//! threads, and a lock held by another thread at that instant would stay locked forever in the
//! child.
//!
//! Recording ([`record_to`]): every [`event`] is also appended to a file that every process of
//! the demo shares. The parent cannot see what its children print, but it can read that file
//! back: [`crate::timeline`] draws it as lanes.
//!
//! After Ctrl-C, the signal watcher's first line (`interrupted`) closes the output of the
//! process's other threads: a line being written is finished first (the watcher waits for it,
//! briefly), a line begun afterwards is not written; so no work appears after `interrupted`.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use serde_json::{Value, json};
use unicode_width::UnicodeWidthStr;

mod record;
pub(crate) use record::{ENV_REPORT, env_value, init_from_env};
pub use record::{record_to, recording_fd, set_tracing, tracing};

static JSON: AtomicBool = AtomicBool::new(false);
/// CLOCK_MONOTONIC at the demo's start, in nanoseconds; system-wide, so children share it.
static T0_NS: AtomicU64 = AtomicU64::new(0);
/// Leaked `&'static str` (one per process): lock-free, so it is safe to read after `fork`.
static WHO: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());

/// Starts the demo's clock and chooses people's lines or JSON events. Called once by the
/// top-level process; children inherit the settings (fork) or receive them (spawn).
pub fn init(json: bool, who: &str) {
    JSON.store(json, Ordering::Relaxed);
    T0_NS.store(monotonic_ns(), Ordering::Relaxed);
    set_who(who);
}

/// Names the current process in every line it prints from now on.
pub fn set_who(who: &str) {
    let leaked = Box::into_raw(Box::new(who.to_string()));
    WHO.store(leaked, Ordering::Release);
}

/// The name of the current process, as printed in its lines.
pub fn who() -> &'static str {
    // Safety: a pointer that is not null comes from `Box::into_raw` in `set_who` and is never
    // freed, so it stays valid for the rest of the process.
    unsafe { WHO.load(Ordering::Acquire).as_ref() }.map_or("main", String::as_str)
}

/// True when events are printed as JSON lines.
pub fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Milliseconds since the demo started.
pub fn elapsed_ms() -> u64 {
    elapsed_us() / 1_000
}

/// Microseconds since the demo started: the clock of `--trace` (events carry it as `t_us`).
pub fn elapsed_us() -> u64 {
    monotonic_ns().saturating_sub(T0_NS.load(Ordering::Relaxed)) / 1_000
}

/// The name of the thread that [`crate::signals`] starts to take Ctrl-C and SIGTERM.
const WATCHER_THREAD: &str = "signal-watcher";
/// Set by the watcher's first line: from then on only the watcher prints.
static SHUT: AtomicBool = AtomicBool::new(false);
/// Lines being written right now by threads other than the watcher.
static WRITING: AtomicUsize = AtomicUsize::new(0);

/// Writes one line with `write`, unless the watcher has begun the shutdown (see the module
/// documentation). SeqCst on both sides: either the writer sees `SHUT`, or the watcher sees
/// the writer in `WRITING` and waits for its line to be out.
fn in_turn(write: impl FnOnce()) {
    if std::thread::current().name() == Some(WATCHER_THREAD) {
        SHUT.store(true, Ordering::SeqCst);
        // Bounded: a writer blocked on a full pipe must not stop the shutdown.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while WRITING.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        return write();
    }
    WRITING.fetch_add(1, Ordering::SeqCst);
    // Lowered on unwind too: a `write` that panics must not hold the watcher's shutdown up.
    struct Written;
    impl Drop for Written {
        fn drop(&mut self) {
            WRITING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _written = Written;
    if !SHUT.load(Ordering::SeqCst) {
        write();
    }
}

/// Prints one event: a people's line (`text`) or, with `--json`, a JSON object carrying `data`.
/// While recording ([`record_to`]), the JSON line is also appended to the recording file.
pub fn event(event: &str, data: Value, text: impl Display) {
    in_turn(|| {
        let recording = recording_fd();
        let json = (json_mode() || recording.is_some()).then(|| json_line(event, data));
        if let (Some(fd), Some(json)) = (recording, &json) {
            write_record(fd, json.as_bytes());
        }
        let line = match json {
            Some(json) if json_mode() => json,
            _ => human_line(&text.to_string()),
        };
        write_stdout(line.as_bytes());
    });
}

/// Appends an event to the recording file only, never to the output: the phase marks a trace
/// draws (see [`crate::trace`]). Without a recording it does nothing.
pub fn record_only(event: &str, data: Value) {
    if let Some(fd) = recording_fd() {
        write_record(fd, json_line(event, data).as_bytes());
    }
}

/// Says a line once: the event's name, its fields and the people's text in one call.
///
/// ```ignore
/// common::event!("bought", { "before": before, "after": after },
///                "bought a ticket ({before} -> {after})");
/// ```
///
/// The fields are `serde_json::json!` object syntax; the text is `format!` syntax. It is
/// [`event`] with the `json!` and `format!` written for you.
#[macro_export]
macro_rules! event {
    ($name:expr, { $($fields:tt)* }, $($text:tt)+) => {
        $crate::report::event(
            $name,
            $crate::__serde_json::json!({ $($fields)* }),
            ::std::format!($($text)+),
        )
    };
}

/// Prose for people: an explanation or a result in words. In JSON mode it is the event `say`,
/// so that standard output stays one JSON object per line.
pub fn say(text: impl Display) {
    let text = text.to_string();
    event("say", json!({ "text": text }), text);
}

/// Starts a part of the demo: a blank line and a title for people, the event `section` in JSON.
pub fn section(title: impl Display) {
    let line = if json_mode() {
        json_line("section", json!({ "title": title.to_string() }))
    } else {
        format!("\n== {title} ==\n")
    };
    in_turn(|| write_stdout(line.as_bytes()));
}

/// Lines of a table or a note printed as they are (no time or pid prefix), for people only;
/// in JSON mode the same rows should be reported with [`event`].
pub fn plain(text: impl Display) {
    in_turn(|| {
        if !json_mode() {
            write_stdout(format!("{text}\n").as_bytes());
        }
    });
}

fn json_line(event: &str, data: Value) -> String {
    let t_us = elapsed_us();
    let line = json!({
        "t_ms": t_us / 1000,
        "t_us": t_us,
        "pid": std::process::id(),
        "ppid": parent_pid(),
        "who": who(),
        "tid": crate::threads::named::gettid(),
        "thread": crate::threads::named::current_name(),
        "event": event,
        "data": data,
    });
    format!("{line}\n")
}

fn human_line(text: &str) -> String {
    let pid = std::process::id();
    let tid = crate::threads::named::gettid();
    let seconds = elapsed_ms() as f64 / 1000.0;
    let prefix = if tid < 0 || tid as u32 == pid {
        format!("{seconds:>7.3}s [{pid:>6} {}] ", who())
    } else {
        format!("{seconds:>7.3}s [{pid:>6}/{tid} {}] ", crate::threads::named::current_name())
    };
    // Continuation lines are indented under the text, so a multi-line message stays readable.
    let indent = " ".repeat(prefix.width());
    let width = LINE_WIDTH.saturating_sub(indent.len()).max(40);
    let pieces: Vec<_> = text.lines().flat_map(|line| wrap(line, width)).collect();
    format!("{prefix}{}\n", pieces.join(&format!("\n{indent}")))
}

/// People's lines longer than this many columns are wrapped, so a long sentence stays readable
/// in a terminal; text a demo already broke into lines of a normal length is left as it is.
const LINE_WIDTH: usize = 130;

/// Splits `line` at spaces into pieces of at most `width` columns, where a Chinese character
/// takes two (a longer word stays whole, and a flag such as `--start-method` is never split at
/// its hyphens). Lines that begin with spaces, such as table rows, are never split.
fn wrap(line: &str, width: usize) -> Vec<std::borrow::Cow<'_, str>> {
    if line.starts_with(' ') {
        return vec![line.into()];
    }
    let options = textwrap::Options::new(width)
        .word_separator(textwrap::WordSeparator::AsciiSpace)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .break_words(false);
    textwrap::wrap(line, options)
}

/// Writes `bytes` to file descriptor 1 with as few `write(2)` calls as the kernel allows: one,
/// for a line of up to `PIPE_BUF` bytes going to a pipe. Errors (a closed pipe) are ignored: a
/// reader that went away must not crash a demo half-way and leave its children behind.
pub fn write_stdout(bytes: &[u8]) {
    write_all(std::io::stdout(), bytes);
}

/// Writes a line to standard error (used for errors, never for events).
pub fn write_stderr(text: &str) {
    let newline = if text.ends_with('\n') { "" } else { "\n" };
    write_all(std::io::stderr(), format!("{text}{newline}").as_bytes());
}

/// Appends one line to the recording file; errors are ignored (a demo must not fail half-way
/// because its timeline could not be written).
fn write_record(fd: i32, bytes: &[u8]) {
    #[cfg(unix)]
    // Safety: `record_to`'s contract keeps `fd` open while it is set.
    write_all(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, bytes);
    #[cfg(not(unix))]
    let _ = (fd, bytes);
}

/// `write(2)` until every byte is out, the descriptor is closed, or an error other than EINTR.
#[cfg(unix)]
fn write_all(fd: impl std::os::fd::AsFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(&fd, bytes) {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// Without `fork`, std's own (locking) writer will do.
#[cfg(not(unix))]
fn write_all(mut out: impl std::io::Write, bytes: &[u8]) {
    let _ = out.write_all(bytes);
}

fn parent_pid() -> u32 {
    #[cfg(unix)]
    return std::os::unix::process::parent_id();
    #[cfg(not(unix))]
    0
}

/// CLOCK_MONOTONIC in nanoseconds. Unlike `Instant`, its value means the same in every process
/// of the machine, so a spawned child can measure from the parent's start.
pub fn monotonic_ns() -> u64 {
    #[cfg(unix)]
    return nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |ts| std::time::Duration::from(ts).as_nanos() as u64);
    #[cfg(not(unix))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_whose_writing_panics_does_not_keep_the_shutdown_waiting() {
        let panicked = std::panic::catch_unwind(|| in_turn(|| panic!("a write that fails")));
        assert!(panicked.is_err(), "the write ran (no watcher has shut the output)");
        // Other tests may be writing a line right now: each is out within the deadline, but a
        // count left raised by the panic never comes down.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while WRITING.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "WRITING stayed raised");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_line_from_a_named_thread_names_the_thread_and_its_tid() {
        let (line, tid) = crate::threads::named::spawn("LoopThread", || {
            (human_line("thread LoopThread >>> 1"), crate::threads::named::gettid())
        })
        .unwrap()
        .join()
        .unwrap();
        assert!(line.contains(&format!("/{tid} LoopThread] thread LoopThread >>> 1")), "{line}");
        assert_ne!(tid as u32, std::process::id());
    }

    #[test]
    fn long_prose_is_wrapped_at_spaces_and_table_rows_are_not() {
        let words = "word ".repeat(60);
        let pieces = wrap(words.trim_end(), 40);
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.width() <= 40 && !p.starts_with(' ')));
        assert_eq!(pieces.join(" "), words.trim_end());
        let row = format!("   {}", "x ".repeat(60));
        assert_eq!(wrap(&row, 40), vec![row.as_str()]);
        // The notes' Chinese: two columns a character, so 包子 takes four.
        let buns = "包子 ".repeat(30);
        let pieces = wrap(buns.trim_end(), 40);
        assert!(pieces.iter().all(|p| p.width() <= 40), "{pieces:?}");
        assert_eq!(pieces.join(" "), buns.trim_end());
        // Hyphenation would leave `--start-` on the first line, which has room for it.
        let flag = format!("{} --start-method", "x".repeat(30));
        assert_eq!(wrap(&flag, 40), ["x".repeat(30), "--start-method".into()]);
    }

    #[test]
    fn a_multi_line_message_keeps_its_lines_under_the_prefix() {
        let out = human_line("first\nsecond");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("] first"));
        assert_eq!(lines[1].trim_start(), "second");
        assert_eq!(lines[0].len() - "first".len(), lines[1].len() - "second".len());
    }
}
