//! predict — guess first, then see (`--predict`, `--answer VALUE`).
//!
//! A part whose outcome a learner could guess asks its question from its own code, at the
//! moment before the reveal, and judges the guess against what happened *in this run* (the race
//! oversells by 9 on one run and by 7 on another, so there is no stored answer):
//!
//! ```ignore
//! let guess = predict::ask(&common, "oversold", "10 buyers, 1 ticket, no lock: how many buy it?",
//!                          Expect::Count);
//! let sold = run_the_race()?;                       // the reveal
//! guess.reveal(sold, "each buyer read count=1 before anyone wrote 0");
//! ```
//!
//! Where the guess comes from, in this order:
//! - `--answer VALUE` (repeatable): the values are used by the questions in turn; `--answer
//!   ID=VALUE` is kept for the question `ID`. For scripts, a class's shared answer and tests.
//! - With `--predict` and a terminal on stdin (and no `--json`): the question is printed and a
//!   line is read; Enter (or end of input) skips. A reply that does not fit is asked again.
//! - Otherwise (a pipe, CI, `--json`): the question is printed as an event and nothing waits.
//!
//! Without `--predict` or `--answer`, [`ask`] does nothing and [`Guess::reveal`] neither: a demo
//! prints exactly what it printed before.
//!
//! When the environment names a descriptor in `CONCURRENCY_DEMOS_ANSWERS_FD` (the `tour` runner
//! does this), each `answer` event is also appended to it as one JSON line, so the runner can
//! sum up the learner's guesses over many demos.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::cli::CommonArgs;
use crate::report;

/// Where a runner asks for every `answer` event (a descriptor opened with `O_APPEND`).
pub const ENV_ANSWERS_FD: &str = "CONCURRENCY_DEMOS_ANSWERS_FD";

/// What kind of reply a question expects, and how a guess is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// A whole number; right when it is the count that happened.
    Count,
    /// One of these words (a reply may be a word, its first letters if they are unambiguous,
    /// or its number from 1); right when it is the one that happened.
    Choice(&'static [&'static str]),
    /// A number; right when within `within` (a fraction: 0.25 = 25 %) of what was measured.
    About { within: f64 },
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Count => "a whole number".into(),
            Expect::Choice(words) => format!("one of: {}", words.join(" / ")),
            Expect::About { within } => format!("a number (right within {:.0} %)", within * 100.0),
        }
    }

    /// The reply in its judged form (a number, or the chosen word), or why it does not fit.
    fn parse(&self, reply: &str) -> Result<Outcome, String> {
        let reply = reply.trim();
        match self {
            Expect::Count => reply
                .parse::<u64>()
                .map(|n| Outcome::Number(n as f64))
                .map_err(|_| format!("{reply:?} is not a whole number")),
            Expect::About { .. } => match reply.trim_end_matches(['x', '×']).parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Outcome::Number(x)),
                _ => Err(format!("{reply:?} is not a number")),
            },
            Expect::Choice(words) => {
                let lower = reply.to_lowercase();
                if let Ok(n) = lower.parse::<usize>()
                    && (1..=words.len()).contains(&n)
                {
                    return Ok(Outcome::Word(words[n - 1].to_string()));
                }
                if let Some(word) = words.iter().find(|w| w.to_lowercase() == lower) {
                    return Ok(Outcome::Word(word.to_string()));
                }
                let starting: Vec<_> =
                    words.iter().filter(|w| w.to_lowercase().starts_with(&lower)).collect();
                match starting.as_slice() {
                    [one] if !lower.is_empty() => Ok(Outcome::Word(one.to_string())),
                    _ => Err(format!("{reply:?} is not one of: {}", words.join(" / "))),
                }
            }
        }
    }

    fn judge(&self, guess: &Outcome, actual: &Outcome) -> bool {
        match (self, guess, actual) {
            (Expect::Count, Outcome::Number(g), Outcome::Number(a)) => (g - a).abs() < 0.5,
            (Expect::About { within }, Outcome::Number(g), Outcome::Number(a)) => {
                (g - a).abs() <= within * a.abs().max(f64::EPSILON)
            }
            (_, Outcome::Word(g), Outcome::Word(a)) => g.eq_ignore_ascii_case(a),
            _ => false,
        }
    }
}

/// What happened: a number (a count, a ratio, seconds) or a word (one of a question's choices).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Number(f64),
    Word(String),
}

impl Outcome {
    fn to_json(&self) -> Value {
        match self {
            Outcome::Number(x) if x.fract() == 0.0 && x.abs() < 1e15 => json!(*x as i64),
            Outcome::Number(x) => json!((x * 1000.0).round() / 1000.0),
            Outcome::Word(w) => json!(w),
        }
    }
}

impl Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Number(x) if x.fract() == 0.0 => write!(f, "{x:.0}"),
            Outcome::Number(x) => write!(f, "{x:.2}"),
            Outcome::Word(w) => f.write_str(w),
        }
    }
}

macro_rules! outcome_from {
    ($($t:ty),* => $variant:ident($x:ident => $value:expr)) => {$(
        impl From<$t> for Outcome {
            fn from($x: $t) -> Outcome {
                Outcome::$variant($value)
            }
        }
    )*};
}
outcome_from!(u64, u32, usize, i64, i32, f64 => Number(n => n as f64));
outcome_from!(&str, String => Word(w => w.to_string()));

/// A question asked, waiting for its reveal. Inert (reveals nothing) without `--predict`.
#[derive(Debug)]
#[must_use = "a question must be revealed with Guess::reveal once the outcome is known"]
pub struct Guess {
    asked: Option<Asked>,
}

#[derive(Debug)]
struct Asked {
    id: String,
    question: String,
    expect: Expect,
    /// The reply's judged form (or why it does not fit), and the reply as given.
    reply: Option<(Result<Outcome, String>, String)>,
}

/// How many questions of this process took their turn at the `--answer` values that name none.
static USED: AtomicUsize = AtomicUsize::new(0);

/// Asks `question` (identified by `id`, a short word such as `oversold`) and returns the guess
/// to judge with [`Guess::reveal`]. Call it in the process that will see the outcome, before the
/// part starts what the question is about; it waits only for a learner at a terminal.
pub fn ask(common: &CommonArgs, id: &str, question: impl Into<String>, expect: Expect) -> Guess {
    if !common.predict && common.answer.is_empty() {
        return Guess { asked: None };
    }
    let question = question.into();
    // `--answer ID=VALUE` for this question, else the next `--answer VALUE` that names none.
    let answers = &common.answer;
    let named = answers.iter().find_map(|a| {
        let (name, value) = a.split_once('=')?;
        (name.trim() == id).then(|| value.trim().to_string())
    });
    let given = named.or_else(|| {
        let turn = USED.fetch_add(1, Ordering::Relaxed);
        answers.iter().filter(|a| !a.contains('=')).nth(turn).map(|a| a.trim().to_string())
    });
    let at_terminal =
        given.is_none() && common.predict && !report::json_mode() && std::io::stdin().is_terminal();
    let from = match (&given, at_terminal) {
        (Some(_), _) => "--answer",
        (None, true) => "terminal",
        (None, false) => "none",
    };
    let expects = expect.describe();
    crate::event!("question", { "id": id, "text": question, "expects": expects, "waiting": at_terminal,
                "from": from }, "QUESTION ({id}): {question}\n  ({expects})");
    if let Some(r) = &given {
        report::say(format!("your guess (--answer): {r}"));
    }
    let reply = if at_terminal { read_reply(&expect) } else { given };
    let reply = reply.map(|r| (expect.parse(&r), r));
    Guess { asked: Some(Asked { id: id.to_string(), question, expect, reply }) }
}

fn read_reply(expect: &Expect) -> Option<String> {
    loop {
        report::write_stdout(b"  your guess (Enter skips): ");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
            return None;
        }
        let reply = line.trim();
        match expect.parse(reply) {
            Ok(_) => return Some(reply.to_string()),
            Err(why) => report::say(format!("{why}; try again")),
        }
    }
}

impl Guess {
    /// True when a question was asked (the run has `--predict` or `--answer`).
    pub fn asked(&self) -> bool {
        self.asked.is_some()
    }

    /// Reveals what happened in this run and judges the guess: event `answer` with `guess`,
    /// `actual`, `right` (null without a guess) and `why` (what explains the outcome).
    pub fn reveal(self, actual: impl Into<Outcome>, why: impl Display) {
        let Some(asked) = self.asked else { return };
        let actual = actual.into();
        let why = why.to_string();
        let (guess, right, verdict) = match &asked.reply {
            None => (Value::Null, Value::Null, "no guess".to_string()),
            Some((Err(unfit), reply)) => (json!(reply), json!(false), format!("wrong ({unfit})")),
            Some((Ok(judged), reply)) => {
                let right = asked.expect.judge(judged, &actual);
                let word = if right { "RIGHT" } else { "wrong" };
                (judged.to_json(), json!(right), format!("you said {reply}: {word}"))
            }
        };
        let data = json!({
            "id": asked.id, "question": asked.question, "guess": guess,
            "actual": actual.to_json(), "right": right, "why": why,
        });
        append_to_runner(&data);
        let text = format!("ANSWER ({}): {actual} ({verdict})\n  why: {why}", asked.id);
        report::event("answer", data, text);
    }
}

/// Appends the `answer` event's data to the runner's descriptor, if one is named (see the
/// module docs); errors are ignored: a summary must never break a demo.
fn append_to_runner(data: &Value) {
    let fd = std::env::var(ENV_ANSWERS_FD).ok().and_then(|v| v.parse::<i32>().ok());
    let Some(fd) = fd.filter(|fd| *fd >= 0) else { return };
    let line = format!("{}\n", json!({ "who": report::who(), "answer": data }));
    // Safety: write(2) on a number that is not open fails with EBADF and does nothing;
    // the runner opened it with O_APPEND, so one write is one whole line.
    #[cfg(unix)]
    let _ = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    #[cfg(not(unix))]
    let _ = line;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_right_only_when_it_is_the_count() {
        let g = Expect::Count.parse("9").unwrap();
        assert!(Expect::Count.judge(&g, &Outcome::from(9u64)));
        assert!(!Expect::Count.judge(&g, &Outcome::from(7u64)));
        assert!(Expect::Count.parse("nine").is_err());
    }

    #[test]
    fn a_choice_takes_a_word_a_prefix_or_a_number() {
        let e = Expect::Choice(&["main", "child"]);
        assert_eq!(e.parse("CHILD").unwrap(), Outcome::from("child"));
        assert_eq!(e.parse("m").unwrap(), Outcome::from("main"));
        assert_eq!(e.parse("2").unwrap(), Outcome::from("child"));
        assert!(e.parse("x").is_err());
        assert!(e.judge(&e.parse("main").unwrap(), &Outcome::from("main")));
    }

    #[test]
    fn about_is_right_within_its_tolerance() {
        let e = Expect::About { within: 0.25 };
        assert!(e.judge(&e.parse("2x").unwrap(), &Outcome::from(2.3)));
        assert!(!e.judge(&e.parse("1").unwrap(), &Outcome::from(2.0)));
    }
}
