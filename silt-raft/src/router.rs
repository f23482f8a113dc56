//! An in-process network: every node's RPCs are calls on the other
//! nodes' `Raft` handles, as in openraft's own tests. For a cluster in one
//! process (tests, benches, the example); a node taken off the router is
//! unreachable, as a killed process would be.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};

use crate::{Damaged, TypeConfig};

type NodeId = u64;

/// The nodes reachable in this process, by id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft<TypeConfig>>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("nodes", &self.nodes().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    fn nodes(&self) -> MutexGuard<'_, BTreeMap<NodeId, Raft<TypeConfig>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `raft` reachable as node `id`.
    pub fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.nodes().insert(id, raft);
    }

    /// Makes node `id` unreachable; returns its handle if it was there.
    pub fn remove(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.nodes().remove(&id)
    }

    /// Every reachable node's id and handle.
    pub fn handles(&self) -> Vec<(NodeId, Raft<TypeConfig>)> {
        self.nodes()
            .iter()
            .map(|(id, raft)| (*id, raft.clone()))
            .collect()
    }

    /// Node `id`'s handle, if it is reachable.
    pub fn get(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.nodes().get(&id).cloned()
    }

    /// The target's handle, or the error a dead link gives.
    fn target(&self, id: NodeId) -> Result<Raft<TypeConfig>, Unreachable> {
        self.get(id)
            .ok_or_else(|| Unreachable::new(&Damaged(format!("node {id} is not on the router"))))
    }
}

/// One node's connection to another through a [`Router`].
#[derive(Debug)]
pub struct Connection {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

fn remote<E: std::error::Error>(
    target: NodeId,
    e: RaftError<NodeId, E>,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::RemoteError(RemoteError::new(target, e))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.target(self.target)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| remote(self.target, e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.router.target(self.target)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| remote(self.target, e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.target(self.target)?;
        raft.vote(rpc).await.map_err(|e| remote(self.target, e))
    }
}
