//! sync — a semaphore and an event shared by processes, which survive a process killed in the
//! middle: [`ProcessSemaphore`] (`sync/semaphore.rs`: one robust mutex per place) and
//! [`ProcessEvent`] (`sync/event.rs`: one futex word), Python's `multiprocessing.Semaphore` and
//! `multiprocessing.Event` rebuilt on [`crate::shm`].
//!
//! A forked child has the mapping already. A spawned child is passed the block's descriptor
//! ([`ProcessSemaphore::fds`] for `Process::pass_fds`) and receives the semaphore or event in its
//! arguments, as a [`SharedDescriptor`]: deserializing maps the block again, after checking its
//! id, in a descriptor of its own (a duplicate), so a handle can be rebuilt any number of times.
//! Linux only, as [`crate::shm`].

#![cfg(target_os = "linux")]

mod event;
mod semaphore;

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

pub use event::ProcessEvent;
pub use semaphore::{MAX_PLACES, Place, ProcessSemaphore};

use crate::shm::ShmError;

/// What can go wrong with a process semaphore or event.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("a process semaphore has from 1 to {MAX_PLACES} places, not {0}")]
    Places(usize),
    #[error("rebuilding a shared {what} from its descriptor: {why}")]
    BadDescriptor { what: &'static str, why: String },
    #[error(transparent)]
    Shm(#[from] ShmError),
}

/// What a handle serializes to: the block's descriptor number, and its id (a random number
/// also stored in the block: proof the number names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDescriptor {
    pub fd: RawFd,
    pub id: u64,
}

/// What the semaphore and the event share: a descriptor that names them, and travels in a
/// spawned child's arguments.
macro_rules! shared_handle {
    ($handle:ident, $block:ty, $what:literal, $magic:expr) => {
        impl $handle {
            /// Rebuilds a handle from what a parent sent.
            pub fn from_descriptor(d: SharedDescriptor) -> Result<$handle, SyncError> {
                let bad = |why: String| SyncError::BadDescriptor { what: $what, why };
                // Safety: only the magic number and the id are read before they prove the
                // block is of this kind.
                let block = unsafe { SharedBlock::<$block>::map_passed(d.fd) }
                    .map_err(|e| bad(e.to_string()))?;
                if block.get().magic != $magic || block.get().id != d.id {
                    // Dropping the block unmaps it and closes the duplicate.
                    return Err(bad(format!("fd {} is not this {}'s shared block", d.fd, $what)));
                }
                Ok($handle { block: Arc::new(block) })
            }

            pub fn descriptor(&self) -> SharedDescriptor {
                SharedDescriptor { fd: self.block.raw_fd(), id: self.block.get().id }
            }

            /// The descriptors a spawned child must be given (`Process::pass_fds`).
            pub fn fds(&self) -> [std::os::fd::RawFd; 1] {
                [self.block.raw_fd()]
            }
        }

        impl serde::Serialize for $handle {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.descriptor(), s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $handle {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$handle, D::Error> {
                let descriptor = <SharedDescriptor as serde::Deserialize>::deserialize(d)?;
                $handle::from_descriptor(descriptor).map_err(serde::de::Error::custom)
            }
        }
    };
}
use shared_handle;
