//! How silt-raft turns openraft's types into silt values and back, and
//! how failures become the `StorageError`s openraft acts on.

use openraft::{AnyError, ErrorSubject, ErrorVerb, NodeId, StorageError, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a stored value could not be used: the bytes silt returned (its CRC
/// passed) do not decode as what the key says they hold, or the stored
/// records contradict each other.
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

pub(crate) fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, Damaged> {
    // postcard fails only on a sequence of unknown length, which a user's
    // own request type could serialize; openraft's types never do.
    postcard::to_allocvec(value).map_err(|e| Damaged(format!("{what}: cannot encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Damaged> {
    postcard::from_bytes(bytes).map_err(|e| {
        Damaged(format!(
            "{what}: {} stored bytes do not decode: {e}",
            bytes.len()
        ))
    })
}

pub(crate) fn io_error<NID: NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: &(dyn std::error::Error + 'static),
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::from_dyn(e, None)).into()
}
