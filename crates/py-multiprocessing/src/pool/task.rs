//! task — what a pool runs: a named function, on JSON values ([`Task::new`]) or on its own types
//! ([`typed_task!`](crate::typed_task)).
//!
//! A spawned worker is this program run again: it has none of the parent's memory, so a task
//! cannot be a closure that holds anything. The parent sends a task's *name* and its arguments;
//! the worker finds the function by name in the list its role gives to `pool::serve`. Python
//! has the same rule (a task must be picklable: a module-level function, not a lambda).
//!
//! How the items of `map` travel: as JSON, which says what each value is, or as postcard, which
//! does not (a `u32` written is not an `i64` read): postcard is used only where the caller's
//! item type *is* the typed task's argument type (and the result type the task's result type),
//! compared by [`type_name`]; everywhere else the items and results are JSON, and a value of the
//! wrong type is an error that names it.

use std::any::type_name;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a task does: JSON arguments in, a JSON result (or an error) out.
pub type TaskFn = fn(Value) -> anyhow::Result<Value>;

/// What a typed task does with a chunk of `map` (see [`run_typed_chunk`]).
pub type ChunkFn = fn(&[u8], Encoding, Encoding, usize) -> Result<Vec<u8>, String>;

/// A typed task's argument and result type names.
type TypeNames = fn() -> (&'static str, &'static str);

/// How a list of items or results is written in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    Json,
    Postcard,
}

/// A named function a pool can run: what Python's `apply_async(f, args)` sends is `f`'s name.
#[derive(Debug)]
pub struct Task {
    /// The name a worker finds the function by; unique in a program's task list.
    pub name: &'static str,
    pub run: TaskFn,
    /// A typed task's function on a chunk of `map`, and its argument and result type names.
    typed: Option<(ChunkFn, TypeNames)>,
}

impl Task {
    /// A task named `name` that runs `run` on JSON values.
    pub const fn new(name: &'static str, run: TaskFn) -> Task {
        Task { name, run, typed: None }
    }

    /// What [`typed_task!`](crate::typed_task) makes.
    #[doc(hidden)]
    pub const fn typed(name: &'static str, run: TaskFn, chunk: ChunkFn, types: TypeNames) -> Task {
        Task { name, run, typed: Some((chunk, types)) }
    }

    /// How a `map` of `T` items read back as `R` results travels: postcard where the types are
    /// the task's own, JSON otherwise (a [`Value`] is always JSON: postcard cannot read one).
    pub(super) fn encodings<T, R>(&self) -> (Encoding, Encoding) {
        let Some((_, types)) = self.typed else { return (Encoding::Json, Encoding::Json) };
        let (arg, result) = types();
        let pick = |name: &str, own: &str| match name == own && own != type_name::<Value>() {
            true => Encoding::Postcard,
            false => Encoding::Json,
        };
        (pick(type_name::<T>(), arg), pick(type_name::<R>(), result))
    }

    /// Runs the task on JSON values, turning its error or panic into its result's message.
    pub(super) fn call(&self, args: Value) -> Result<Value, String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.run)(args))) {
            Ok(ran) => ran.map_err(|e| format!("{e:#}")),
            Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
        }
    }

    /// Runs the task on a chunk of `map` (a [`Task::new`] task on JSON values, item by item).
    pub(super) fn run_chunk(
        &self,
        items: &[u8],
        from: Encoding,
        to: Encoding,
        first: usize,
    ) -> Result<Vec<u8>, String> {
        match self.typed {
            Some((chunk, _)) => chunk(items, from, to, first),
            None => run_typed_chunk(self.run, items, from, to, first),
        }
    }
}

/// A [`Task`] named `$name` that runs `$f`, a function (or a closure that captures nothing)
/// from any argument type serde can read to any result type serde can write, like a Python
/// function:
///
/// ```
/// use py_multiprocessing::pool::Task;
/// fn square(x: i64) -> anyhow::Result<i64> {
///     Ok(x * x)
/// }
/// static SQUARE: Task = py_multiprocessing::typed_task!("square", square);
/// static HALF: Task = py_multiprocessing::typed_task!("half", |x: f64| Ok(x / 2.0));
/// ```
///
/// `apply` and `apply_async` call it through JSON values like any task; a chunk of `map` whose
/// items are of its argument type reaches it in postcard, with no JSON between. An item that is
/// not of the argument type fails that item, as a bad argument of a [`Task::new`] task does.
#[macro_export]
macro_rules! typed_task {
    ($name:expr, $f:expr) => {
        $crate::pool::Task::typed(
            $name,
            |args| $crate::pool::run_typed($f, args),
            |items, from, to, first| $crate::pool::run_typed_chunk($f, items, from, to, first),
            || $crate::pool::type_names($f),
        )
    };
}

/// A typed task's function, called on a JSON value (see [`typed_task!`](crate::typed_task)).
#[doc(hidden)]
pub fn run_typed<A: DeserializeOwned, R: Serialize>(
    f: impl Fn(A) -> anyhow::Result<R>,
    args: Value,
) -> anyhow::Result<Value> {
    let args = serde_json::from_value(args)
        .with_context(|| format!("not an argument of type {}", type_name::<A>()))?;
    Ok(serde_json::to_value(f(args)?)?)
}

/// A typed task's argument and result type names.
#[doc(hidden)]
pub fn type_names<A, R>(_: impl Fn(A) -> anyhow::Result<R>) -> (&'static str, &'static str) {
    (type_name::<A>(), type_name::<R>())
}

/// Runs `f` on each item of a chunk of `map` (`items` in the encoding `from`), in order, and
/// gives the results in the encoding `to`; the first failing item fails the chunk, named by its
/// place in the whole `map` (`first` is the chunk's first).
#[doc(hidden)]
pub fn run_typed_chunk<A: DeserializeOwned, R: Serialize>(
    f: impl Fn(A) -> anyhow::Result<R>,
    items: &[u8],
    from: Encoding,
    to: Encoding,
    first: usize,
) -> Result<Vec<u8>, String> {
    let not_a = |at: usize, e: &dyn std::fmt::Display| {
        format!("on item {at}: not an argument of type {}: {e}", type_name::<A>())
    };
    let items: Vec<A> = match from {
        Encoding::Postcard => postcard::from_bytes(items).map_err(|e| not_a(first, &e))?,
        // Read as a list of `A` at once; if that fails, item by item, to name the item.
        Encoding::Json => match serde_json::from_slice(items) {
            Ok(items) => items,
            Err(_) => {
                let values: Vec<Value> =
                    serde_json::from_slice(items).map_err(|e| e.to_string())?;
                let read = values.into_iter().enumerate();
                read.map(|(i, v)| serde_json::from_value(v).map_err(|e| not_a(first + i, &e)))
                    .collect::<Result<_, _>>()?
            }
        },
    };
    let mut results = Vec::with_capacity(items.len());
    let mut at = first;
    // One guard for the whole chunk: a panic fails the chunk, naming the item it came from.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for item in items {
            results.push(f(item).map_err(|e| format!("on item {at}: {e:#}"))?);
            at += 1;
        }
        Ok::<(), String>(())
    }));
    match ran {
        Err(panic) => Err(format!("on item {at}: panicked: {}", panic_message(panic.as_ref()))),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => match to {
            Encoding::Postcard => postcard::to_allocvec(&results).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::to_vec(&results).map_err(|e| e.to_string()),
        },
    }
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic.downcast_ref::<&str>().map(|s| s.to_string());
    text.or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or("(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    static SQUARE: Task = Task::new("square", Ok);
    static TYPED_SQUARE: Task = crate::typed_task!("typed-square", |x: i64| Ok(x * x));

    #[test]
    fn items_of_the_tasks_own_type_travel_in_postcard_and_others_in_json() {
        let (json, postcard) = (Encoding::Json, Encoding::Postcard);
        assert_eq!(TYPED_SQUARE.encodings::<i64, i64>(), (postcard, postcard));
        assert_eq!(TYPED_SQUARE.encodings::<u32, u64>(), (json, json));
        assert_eq!(TYPED_SQUARE.encodings::<&Value, Value>(), (json, json));
        assert_eq!(SQUARE.encodings::<Value, Value>(), (json, json));
    }
}
