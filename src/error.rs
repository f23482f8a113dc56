//! The one error type of silt.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in silt. Bad input and bad files are errors,
/// never panics.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// match db.put("", "v").await {
///     Err(silt::Error::InvalidArgument(msg)) => assert!(msg.contains("empty")),
///     other => panic!("{other:?}"),
/// }
/// // A second writer on the same directory:
/// assert!(matches!(silt::Db::open(dir.path()).await, Err(silt::Error::Locked { .. })));
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed. `op` names what silt was doing.
    ///
    /// The source is shared (`Arc`) because one failed `fdatasync` is reported
    /// to every caller whose write it covered.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// What silt was doing, e.g. "write WAL" or "fdatasync segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: Arc<io::Error>,
    },
    /// Stored bytes failed a check (CRC, magic, bounds).
    #[error("corruption in {} at offset {offset}: {what}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record or structure.
        offset: u64,
        /// What check failed.
        what: String,
    },
    /// An argument broke a documented limit (e.g. an empty or oversize key).
    /// Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store was closed by [`Db::close`](crate::Db::close) (or every
    /// handle was dropped).
    #[error("the store is closed")]
    Closed,
    /// The store stopped without a `close`: its writer panicked, the Tokio
    /// runtime it ran on shut down, or a thread it needs is gone. What it
    /// had acknowledged is safe as its durability promised; reopen it.
    #[error("the store stopped: {cause}")]
    Stopped {
        /// Why.
        #[source]
        cause: StopCause,
    },
    /// A write was attempted through a read-only handle.
    #[error("the store was opened read-only")]
    ReadOnly,
    /// Another writer (in this process or another) holds the directory.
    #[error("{} is locked by another writer", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A `Builder` knob is out of range; the message names the knob.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An earlier write or sync to disk failed, so silt can no longer promise
    /// durability for new writes. Reads keep working; reopen the store to
    /// recover its durable prefix. (After a failed `fdatasync` the kernel may
    /// have dropped the dirty pages, so retrying would lie: the "fsyncgate"
    /// lesson.)
    #[error("the store refuses writes after an earlier failure: {cause}")]
    Poisoned {
        /// The failure that poisoned the store, as text.
        cause: String,
        /// The failure that poisoned the store.
        #[source]
        source: Arc<Error>,
    },
}

/// Why a store stopped without a `close` ([`Error::Stopped`]).
///
/// ```
/// let e = silt::Error::Stopped { cause: silt::StopCause::RuntimeShutDown };
/// assert!(std::error::Error::source(&e).unwrap().to_string().contains("runtime"));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopCause {
    /// The writer task panicked (a bug in silt: please report it).
    #[error("the writer task panicked: {0}")]
    WriterPanicked(String),
    /// The Tokio runtime the writer ran on shut down
    /// ([`StoreRuntime::Caller`](crate::StoreRuntime::Caller)).
    #[error("the Tokio runtime the writer ran on shut down")]
    RuntimeShutDown,
    /// A background thread the store needs exited (it names which).
    #[error("the store's {0} is gone")]
    ThreadGone(&'static str),
}

/// `std::result::Result` with silt's [`Error`].
///
/// ```
/// fn check(r: silt::Result<()>) -> bool { r.is_ok() }
/// assert!(check(Ok(())));
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        what: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}
