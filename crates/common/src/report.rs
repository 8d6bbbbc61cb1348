//! report — who said what, and when: people's lines and `--json` events.
//!
//! Every line a demo prints comes from here, so every line carries the time since the demo
//! started, the pid and the name of the process that printed it:
//!
//! ```text
//!   0.103s [  4182 buyer-3] bought a ticket (1 -> 0)
//! ```
//!
//! With `--json` the same moment is one JSON object on one line:
//!
//! ```text
//! {"t_ms":103,"pid":4182,"ppid":4170,"who":"buyer-3","event":"bought","data":{"before":1,"after":0}}
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

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use serde_json::{Value, json};

/// Environment variable through which a spawned child learns the demo's clock and output mode.
pub(crate) const ENV_REPORT: &str = "CONCURRENCY_DEMOS_REPORT";

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
    let ptr = WHO.load(Ordering::Acquire);
    if ptr.is_null() {
        "main"
    } else {
        // Safety: the pointer comes from `Box::into_raw` in `set_who` and is never freed, so it
        // stays valid for the rest of the process.
        unsafe { (*ptr).as_str() }
    }
}

/// True when events are printed as JSON lines.
pub fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Milliseconds since the demo started.
pub fn elapsed_ms() -> u64 {
    monotonic_ns().saturating_sub(T0_NS.load(Ordering::Relaxed)) / 1_000_000
}

/// What a spawned child needs to print on the same clock and in the same mode as its parent.
pub(crate) fn env_value() -> String {
    format!("{}:{}", T0_NS.load(Ordering::Relaxed), u8::from(json_mode()))
}

/// Restores the clock and mode in a spawned child from [`env_value`]'s string.
pub(crate) fn init_from_env(value: &str, who: &str) {
    let (t0, json) = value.split_once(':').unwrap_or(("0", "0"));
    T0_NS.store(t0.parse().unwrap_or_else(|_| monotonic_ns()), Ordering::Relaxed);
    JSON.store(json == "1", Ordering::Relaxed);
    set_who(who);
}

/// Prints one event: a people's line (`text`) or, with `--json`, a JSON object carrying `data`.
pub fn event(event: &str, data: Value, text: impl Display) {
    let line = if json_mode() { json_line(event, data) } else { human_line(&text.to_string()) };
    write_stdout(line.as_bytes());
}

/// Prose for people: an explanation or a result in words. In JSON mode it is the event `say`,
/// so that standard output stays one JSON object per line.
pub fn say(text: impl Display) {
    let text = text.to_string();
    event("say", json!({ "text": text }), text);
}

/// Starts a part of the demo: a blank line and a title for people, the event `section` in JSON.
pub fn section(title: impl Display) {
    let title = title.to_string();
    if json_mode() {
        write_stdout(json_line("section", json!({ "title": title })).as_bytes());
    } else {
        write_stdout(format!("\n== {title} ==\n").as_bytes());
    }
}

/// Lines of a table or a note printed as they are (no time or pid prefix), for people only;
/// in JSON mode the same rows should be reported with [`event`].
pub fn plain(text: impl Display) {
    if !json_mode() {
        let mut text = text.to_string();
        text.push('\n');
        write_stdout(text.as_bytes());
    }
}

fn json_line(event: &str, data: Value) -> String {
    let line = json!({
        "t_ms": elapsed_ms(),
        "pid": std::process::id(),
        "ppid": parent_pid(),
        "who": who(),
        "event": event,
        "data": data,
    });
    let mut line = line.to_string();
    line.push('\n');
    line
}

fn human_line(text: &str) -> String {
    let prefix =
        format!("{:>7.3}s [{:>6} {}] ", elapsed_ms() as f64 / 1000.0, std::process::id(), who());
    // Continuation lines are indented under the text, so a multi-line message stays readable.
    let indent = " ".repeat(prefix.chars().count());
    let mut out = String::with_capacity(prefix.len() + text.len() + 1);
    for (i, line) in text.lines().enumerate() {
        out.push_str(if i == 0 { &prefix } else { &indent });
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str(&prefix);
        out.push('\n');
    }
    out
}

/// Writes `bytes` to file descriptor 1 with as few `write(2)` calls as the kernel allows: one,
/// for a line of up to `PIPE_BUF` bytes going to a pipe. Errors (a closed pipe) are ignored: a
/// reader that went away must not crash a demo half-way and leave its children behind.
pub fn write_stdout(bytes: &[u8]) {
    #[cfg(unix)]
    {
        let mut rest = bytes;
        while !rest.is_empty() {
            match nix::unistd::write(std::io::stdout(), rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let _ = std::io::stdout().write_all(bytes);
    }
}

/// Writes a line to standard error in one `write(2)` (used for errors, never for events).
pub fn write_stderr(text: &str) {
    let mut line = text.to_string();
    if !line.ends_with('\n') {
        line.push('\n');
    }
    #[cfg(unix)]
    {
        let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

fn parent_pid() -> u32 {
    #[cfg(unix)]
    {
        nix::unistd::getppid().as_raw() as u32
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// CLOCK_MONOTONIC in nanoseconds. Unlike `Instant`, its value means the same in every process
/// of the machine, so a spawned child can measure from the parent's start.
pub fn monotonic_ns() -> u64 {
    #[cfg(unix)]
    {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
            Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
            Err(_) => 0,
        }
    }
    #[cfg(not(unix))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_ending_in_one_newline() {
        let line = json_line("bought", json!({"before": 1, "after": 0}));
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "bought");
        assert_eq!(value["data"]["after"], 0);
        assert_eq!(value["pid"], std::process::id());
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
