//! map — `Pool::map`: the items in chunks, one frame each way per chunk, as
//! Python sends one pickle per chunk.
//!
//! The caller's thread encodes each chunk's items (postcard where they are the typed task's own
//! argument type, JSON otherwise: see `pool/task.rs`) and gives the chunk to a worker itself if
//! one can take it, so the workers start on the first chunk while the rest are encoded. The
//! result thread keeps each chunk's answer as it comes; `map` reads them, in the items' order,
//! as its caller's type once the last has come, and a chunk lost with a killed worker fails the
//! map with that worker's error.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::result::{AsyncResult, Slot, lock};
use super::state::{Job, MapJob, Pending, Sink};
use super::task::{Encoding, Task};
use super::worker::{ToWorker, frame};
use super::{Pool, PoolError, default_chunksize};

/// A map's shared part, for its caller to read the results from (`None`: a map of nothing).
type SharedMap = Arc<Mutex<MapJob>>;

impl Pool {
    /// Runs `task` on every item, in chunks, and returns the results in the items' order
    /// (Python's `map`), each read as an `R`: a [`Value`], or whatever type the task's results
    /// are (`let squares: Vec<u64> = pool.map(&SQUARE, 0..10)?`). The first error fails the
    /// whole call, and so does a result that is not an `R`.
    pub fn map<T: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_chunked(task, items, None)
    }

    /// [`Pool::map`] with a chosen chunk size (items per task sent to a worker); `None` chooses
    /// as Python does (the items split into about four chunks per worker).
    pub fn map_chunked<T: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, PoolError> {
        let (items_as, results_as) = task.encodings::<T, R>();
        let (handle, map) = self.submit_map(task, items, chunksize, items_as, results_as)?;
        handle.take()?;
        let Some(map) = map else { return Ok(Vec::new()) };
        let parts = std::mem::take(&mut lock(&map).parts);
        let broken = |e: String| {
            PoolError::Broken(format!("a worker's answer to a chunk of map({}): {e}", task.name))
        };
        // Room for every result at once: growing a list of 100,000 values step by step copies
        // it and faults in its pages again at each step.
        let mut values: Vec<R> = Vec::with_capacity(lock(&map).items);
        for part in parts {
            let part = part.ok_or_else(|| broken("its results were lost".into()))?;
            let read: Vec<R> = match results_as {
                Encoding::Postcard => postcard::from_bytes(&part).map_err(|e| e.to_string()),
                Encoding::Json => serde_json::from_slice(&part).map_err(|e| e.to_string()),
            }
            .map_err(broken)?;
            values.extend(read);
        }
        Ok(values)
    }

    /// Submits a map: every chunk a job, whose answers `map` reads once the last has come.
    fn submit_map<T: Serialize>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
        items_as: Encoding,
        results_as: Encoding,
    ) -> Result<(AsyncResult, Option<SharedMap>), PoolError> {
        self.remember(task);
        // Python's map makes a list of an iterable that has no len(); so do we, to count it.
        let items: Vec<T> = items.into_iter().collect();
        let n = items.len();
        let chunksize = chunksize.unwrap_or_else(|| default_chunksize(n, self.shared.size)).max(1);
        let mut st = lock(&self.shared.state);
        st.check_open()?;
        let map_id = st.next_id;
        st.next_id += 1;
        let slot = Slot::new(map_id, task.name);
        if n == 0 {
            drop(st);
            slot.set(Ok(Value::Array(Vec::new())));
            return Ok((AsyncResult { slot }, None));
        }
        let chunks = n.div_ceil(chunksize);
        let map = Arc::new(Mutex::new(MapJob {
            slot: slot.clone(),
            items: n,
            parts: vec![None; chunks],
            chunks_left: chunks,
            finished: false,
        }));
        // Every chunk is a job from now on (so `close` waits for all of them), but reaches the
        // backlog only once encoded.
        let first_id = st.next_id;
        st.next_id += chunks as u64;
        for index in 0..chunks {
            let sink = Sink::Chunk { map: map.clone(), index };
            st.jobs.insert(first_id + index as u64, Job { task: task.name, sink });
        }
        drop(st);
        for (index, chunk) in items.chunks(chunksize).enumerate() {
            let id = first_id + index as u64;
            let encoded = match items_as {
                Encoding::Postcard => postcard::to_allocvec(chunk).map_err(|e| e.to_string()),
                Encoding::Json => serde_json::to_vec(chunk).map_err(|e| e.to_string()),
            };
            let mut st = lock(&self.shared.state);
            if !st.jobs.contains_key(&id) {
                break; // terminated (or broken) meanwhile: the map has already failed
            }
            let encoded = match encoded {
                Ok(encoded) => encoded,
                Err(e) => {
                    let why = format!("encoding the items of map({}): {e}", task.name);
                    for later in id + 1..first_id + chunks as u64 {
                        st.jobs.remove(&later);
                    }
                    // Its error callback runs in the result thread, like every other's.
                    if let Some(completion) =
                        self.shared.finish_job(id, Err(PoolError::Invalid(why)), &mut st)
                    {
                        st.deferred.push(completion);
                    }
                    drop(st);
                    self.shared.wake();
                    break;
                }
            };
            let first = index * chunksize;
            let msg = ToWorker::Chunk {
                id,
                task: task.name.to_string(),
                first,
                items: items_as,
                results: results_as,
            };
            self.shared.record_task("task_submitted", id);
            st.backlog.push_back(Pending { id, frame: frame(&msg, &encoded) });
            // This thread gives the chunk to a worker itself if one can take it now, rather
            // than waking the result thread to do it.
            self.shared.dispatch(&mut st);
            let waiting = !st.backlog.is_empty() || !st.deferred.is_empty();
            drop(st);
            if waiting {
                self.shared.poke();
            }
        }
        Ok((AsyncResult { slot }, Some(map)))
    }
}
