//! map — `Pool::map`: the items in chunks, one frame each way per chunk, as Python sends one
//! pickle per chunk.
//!
//! Every chunk is a job of its own. The caller's thread encodes each chunk's items (postcard
//! where they are the typed task's own argument type, JSON otherwise: see `pool/task.rs`) and
//! gives the chunk to a worker itself if one can take it, so the workers start on the first
//! chunk while the rest are encoded. Then it reads the chunks' answers in the items' order, as
//! its caller's type.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::result::lock;
use super::task::{Encoding, Task};
use super::worker::{ToWorker, frame};
use super::workers::Pending;
use super::{Pool, PoolError, default_chunksize};

impl Pool {
    /// Runs `task` on every item, in chunks, and returns the results in the items' order
    /// (Python's `map`), each read as an `R`: a [`Value`](serde_json::Value), or whatever type
    /// the task's results are (`let squares: Vec<u64> = pool.map(&SQUARE, 0..10)?`). The first
    /// error fails the whole call at once (a chunk lost with a killed worker too), and so does a
    /// result that is not an `R`.
    pub fn map<T: Serialize, R: DeserializeOwned>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_chunked(task, items, None)
    }

    /// [`Pool::map`] with a chosen chunk size (items per task sent to a worker); `None` chooses
    /// as Python does ([`default_chunksize`]).
    pub fn map_chunked<T: Serialize, R: DeserializeOwned>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, PoolError> {
        let (items_as, results_as) = task.encodings::<T, R>();
        self.remember(task);
        // Python's map makes a list of an iterable that has no len(); so do we, to count it.
        let items: Vec<T> = items.into_iter().collect();
        let size = self.shared.options.processes;
        let chunksize = chunksize.unwrap_or_else(|| default_chunksize(items.len(), size)).max(1);
        let mut st = lock(&self.shared.state);
        st.check_open()?;
        // Every chunk is a job from now on (so that `close` waits for all of them), but reaches
        // the backlog only once encoded.
        let chunks = items.chunks(chunksize);
        let ids = st.next_id..st.next_id + chunks.len() as u64;
        let slots: Vec<_> =
            ids.clone().map(|_| st.new_job(task.name, None, None, Some(ids.clone()))).collect();
        drop(st);
        for (index, (chunk, slot)) in chunks.zip(&slots).enumerate() {
            let msg = ToWorker::Chunk {
                id: slot.id,
                task: task.name.to_string(),
                first: index * chunksize,
                items: items_as,
                results: results_as,
            };
            let encoded = match items_as {
                Encoding::Postcard => postcard::to_allocvec(chunk).map_err(|e| e.to_string()),
                Encoding::Json => serde_json::to_vec(chunk).map_err(|e| e.to_string()),
            };
            let mut st = lock(&self.shared.state);
            let frame = match encoded {
                // Terminated (or broken) meanwhile: every chunk has failed.
                _ if !st.jobs.contains_key(&slot.id) => break,
                Ok(items) => frame(&msg, &items),
                Err(e) => {
                    // This chunk and the next ones will never run.
                    for later in &slots[index..] {
                        st.jobs.remove(&later.id);
                    }
                    let why = format!("encoding the items of map({}): {e}", task.name);
                    return Err(PoolError::Invalid(why));
                }
            };
            self.shared.record_task("task_submitted", slot.id);
            st.backlog.push_back(Pending { id: slot.id, frame });
            // To a worker now if one can take it, rather than through the result thread.
            self.shared.dispatch(&mut st);
            let waiting = !st.backlog.is_empty() || !st.finished.is_empty();
            drop(st);
            if waiting {
                self.shared.poke();
            }
        }
        // Room for every result at once (a list of 100,000 values grown step by step is copied
        // and its pages faulted in at each step), once the items are gone: the results take
        // their memory, whose pages are in, where a second list beside them faults in its own.
        let count = items.len();
        drop(items);
        let mut values: Vec<R> = Vec::with_capacity(count);
        for slot in slots {
            let part = slot.wait(None, true).ok_or(PoolError::Timeout)??;
            let read: Result<Vec<R>, String> = match results_as {
                Encoding::Postcard => postcard::from_bytes(&part).map_err(|e| e.to_string()),
                Encoding::Json => serde_json::from_slice(&part).map_err(|e| e.to_string()),
            };
            values.extend(read.map_err(|e| {
                let task = task.name;
                PoolError::Broken(format!("a worker's answer to a chunk of map({task}): {e}"))
            })?);
        }
        Ok(values)
    }
}
