//! The ticket demo's library: the buyer (路人N), whose own file shows the `flock` on the
//! sidecar and the write by temp file and rename, and the strict `db.json` store. The bench
//! suite `ticket` measures the same store.

pub mod buyer;
pub mod store;
