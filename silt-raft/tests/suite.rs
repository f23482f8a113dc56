//! openraft's own storage test suite (`openraft::testing::Suite`), run
//! against silt-raft's log store and state machine on real silt stores.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use silt_raft::{LogStore, StateMachine, TypeConfig};

/// Each build opens a fresh node's storage in its own temporary directory,
/// which the returned guard removes.
struct SiltBuilder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, tempfile::TempDir>
    for SiltBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<TypeConfig>, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, sm) = silt_raft::open(dir.path()).await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SiltBuilder) {
        panic!("openraft's storage suite failed: {e}");
    }
}
