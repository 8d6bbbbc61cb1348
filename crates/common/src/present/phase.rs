//! phase — one call marks a moment of a demo's concept: a step of a race, or the start and end
//! of a span (holding a lock, a critical section, a task running).
//!
//! ```text
//! phase::step("read");                  // a step point: the scheduler may grant it (--step)
//! let _cs = phase::span("critical section");   // a span until `_cs` is dropped (--trace, --svg)
//! ```
//!
//! The same call serves two listeners, each installed only when its flag asks for it:
//! - the **stepper** (`--step`, `--schedule`): before a step, the worker waits for its turn;
//! - the **tracer** (`--trace`, `--svg`): a step becomes an instant, a span a slice.
//!
//! With neither installed, a mark costs two atomic loads and prints nothing: the demo's lines
//! stay as they are.

use std::sync::OnceLock;

/// What a demo marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark<'a> {
    /// A step of the concept that a scheduler may grant (`read`, `write`, `lock A`).
    Step(&'a str),
    /// A span begins (`critical section`, `holding the lock`).
    Begin(&'a str),
    /// The span of that name ends.
    End(&'a str),
}

/// A listener: called in the thread that made the mark, before the marked operation runs.
pub type Listener = fn(&Mark<'_>);

static STEPPER: OnceLock<Listener> = OnceLock::new();
static TRACER: OnceLock<Listener> = OnceLock::new();

/// Installs the step controller's listener (once per process; a second call is ignored).
pub fn install_stepper(listener: Listener) {
    let _ = STEPPER.set(listener);
}

/// Installs the trace recorder's listener (once per process; a second call is ignored).
pub fn install_tracer(listener: Listener) {
    let _ = TRACER.set(listener);
}

/// Marks a moment: the stepper first (it may wait for a grant), then the tracer (which then
/// records the moment the step really began).
pub fn mark(mark: Mark<'_>) {
    if let Some(stepper) = STEPPER.get() {
        stepper(&mark);
    }
    if let Some(tracer) = TRACER.get() {
        tracer(&mark);
    }
}

/// A step point: `phase::step("write")` just before the write.
pub fn step(name: &str) {
    mark(Mark::Step(name));
}

/// Opens a span that ends when the returned guard is dropped.
#[must_use = "the span ends when this guard is dropped"]
pub fn span(name: &'static str) -> Span {
    mark(Mark::Begin(name));
    Span { name }
}

/// The end of a span, on drop (see [`span`]).
#[derive(Debug)]
pub struct Span {
    name: &'static str,
}

impl Drop for Span {
    fn drop(&mut self) {
        mark(Mark::End(self.name));
    }
}
