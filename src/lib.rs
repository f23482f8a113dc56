//! # silt
//!
//! An async-first, embedded, persistent key-value and blob store for Tokio
//! services. A service awaits `db.put(k, v)` / `db.get(k)` from any task; a
//! writer task turns those calls into group commits of page-aligned writes,
//! and reads are served from a sharded in-memory index without a copy.
//!
//! ```no_run
//! # async fn demo() -> silt::Result<()> {
//! let db = silt::Db::open("/tmp/silt-demo").await?;
//! db.put("hello", "world").await?;
//! assert_eq!(db.get(b"hello").await?.as_deref(), Some(&b"world"[..]));
//! db.close().await?;
//! # Ok(()) }
//! ```
//!
//! See `README.md` for durability, memory and error handling, and
//! `docs/format.md` for the on-disk format.

#![cfg_attr(not(loom), deny(clippy::unwrap_used))]
// Under loom only the modelled modules are built; the rest of their helpers sit unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

/// The sealed-slab budget, public only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod backpressure;
#[cfg(not(loom))]
mod backpressure;
mod error;
mod record;
#[cfg(not(loom))]
mod slab;
/// The slab, public only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod slab;
mod sync;

#[cfg(not(loom))]
mod batch;
#[cfg(not(loom))]
mod builder;
#[cfg(not(loom))]
mod db;
#[cfg(not(loom))]
mod flush;
/// The flush tracker, public only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod flushing;
#[cfg(not(loom))]
mod flushing;
#[cfg(not(loom))]
mod follower;
#[cfg(not(loom))]
mod gc;
#[cfg(not(loom))]
mod id_floor;
#[cfg(not(loom))]
mod index;
/// The index, public only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod index;
#[cfg(not(loom))]
mod io;
/// Under loom only the page arithmetic of the I/O layer is needed.
#[cfg(loom)]
mod io {
    pub(crate) mod aligned;
    pub(crate) mod read;
}
#[cfg(not(loom))]
mod memlimit;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod read;
#[cfg(not(loom))]
mod recovery;
#[cfg(not(loom))]
mod registry;
/// The registry, public only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod registry;
mod resident;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod scan;
#[cfg(not(loom))]
mod segment;
/// Segments, public only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod segment;
#[cfg(not(loom))]
mod shared;
#[cfg(not(loom))]
mod signals;
#[cfg(not(loom))]
mod space;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod verify;
#[cfg(not(loom))]
mod wal;
#[cfg(not(loom))]
mod writer;
#[cfg(not(loom))]
mod xl;

#[cfg(not(loom))]
pub use batch::WriteBatch;
#[cfg(not(loom))]
pub use builder::{Builder, IO_BACKEND_ENV};
#[cfg(not(loom))]
pub use db::Db;
pub use error::{Error, Result, StopCause};
#[cfg(not(loom))]
pub use gc::CompactionReport;
#[cfg(not(loom))]
pub use options::{ColdReads, Durability, IoBackend, StoreRuntime};
#[cfg(not(loom))]
pub use space::FileSpace;
#[cfg(not(loom))]
pub use stats::Stats;
#[cfg(not(loom))]
pub use verify::{verify, Problem, VerifyReport};
/// Entry points into crate-private code for the cargo-fuzz targets in
/// `fuzz/` (`--cfg fuzzing`) and the micro benchmarks in `benches/micro.rs`
/// (feature `bench-internals`). Not a stable API.
#[cfg(all(any(fuzzing, feature = "bench-internals"), not(loom)))]
#[doc(hidden)]
pub mod internals;

#[cfg(all(feature = "fault-injection", not(loom)))]
pub use io::fault::{Fault, FaultInjector, FaultPlan, OpKind, PowerCut};
pub use record::MAX_KEY_LEN;
