//! Deterministic simulation of registry nodes: real openraft, real redb stores on disk, the
//! real deadline task, but Raft messages carried in memory by [`SimNet`], which can cut links
//! and lose nodes, and time from tokio's clock (paused in tests, so seconds of failures run in
//! milliseconds). Faults and latencies come from a seeded generator (rand's `StdRng`), so a
//! failing history can be replayed by its seed (openraft's own election jitter is not seeded).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use orbit_state::{Command, Event, Rejection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::batch::Batcher;
use crate::node::{deadline_loop, raft_config, wall_ms, NodeConfig, NodeError};
use crate::store::{self, StateMachineStore};
use crate::{NodeId, Raft, TypeConfig};

struct NetState {
    nodes: HashMap<NodeId, Raft>,
    /// Links that carry nothing, both ways.
    cut: HashSet<(NodeId, NodeId)>,
    rng: StdRng,
}

/// The simulated network between the nodes.
#[derive(Clone)]
pub struct SimNet(Arc<Mutex<NetState>>);

impl SimNet {
    pub fn new(seed: u64) -> SimNet {
        SimNet(Arc::new(Mutex::new(NetState {
            nodes: HashMap::new(),
            cut: HashSet::new(),
            rng: StdRng::seed_from_u64(seed),
        })))
    }

    /// Cut every link of `id` (a partition of one node from the rest).
    pub fn isolate(&self, id: NodeId) {
        let mut n = self.0.lock().unwrap();
        let others: Vec<NodeId> = n.nodes.keys().copied().filter(|o| *o != id).collect();
        for o in others {
            n.cut.insert((id, o));
            n.cut.insert((o, id));
        }
    }

    pub fn heal(&self) {
        self.0.lock().unwrap().cut.clear();
    }

    /// A message from `from` to `to` now: the target's Raft and the one-way latency, or none
    /// when the link is cut or the target is down.
    fn route(&self, from: NodeId, to: NodeId) -> Option<(Raft, Duration)> {
        let mut n = self.0.lock().unwrap();
        if n.cut.contains(&(from, to)) {
            return None;
        }
        let raft = n.nodes.get(&to)?.clone();
        let ms = n.rng.gen_range(1..=4);
        Some((raft, Duration::from_millis(ms)))
    }

    fn up(&self, from: NodeId, to: NodeId) -> bool {
        let n = self.0.lock().unwrap();
        !n.cut.contains(&(to, from)) && n.nodes.contains_key(&to)
    }
}

pub struct SimFactory {
    from: NodeId,
    net: SimNet,
}

impl RaftNetworkFactory<TypeConfig> for SimFactory {
    type Network = SimPeer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> SimPeer {
        SimPeer {
            from: self.from,
            target,
            net: self.net.clone(),
        }
    }
}

pub struct SimPeer {
    from: NodeId,
    target: NodeId,
    net: SimNet,
}

impl SimPeer {
    /// Carry one RPC: out over the link, handled by the target, back over the link (a reply
    /// is lost if the link was cut meanwhile).
    async fn deliver<T, E, F, Fut>(
        &self,
        f: F,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
        F: FnOnce(Raft) -> Fut,
        Fut: std::future::Future<Output = Result<T, RaftError<NodeId, E>>>,
    {
        let Some((raft, delay)) = self.net.route(self.from, self.target) else {
            let e = std::io::Error::other(format!("node {} unreachable", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        tokio::time::sleep(delay).await;
        let r = f(raft).await;
        tokio::time::sleep(delay).await;
        if !self.net.up(self.from, self.target) {
            let e = std::io::Error::other("reply lost");
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.deliver(|r| async move { r.append_entries(rpc).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.deliver(|r| async move { r.install_snapshot(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.deliver(|r| async move { r.vote(rpc).await }).await
    }
}

/// Make nodes 1..=`n` of `nodes` one cluster (through node 1, which must be running) and wait,
/// on the simulation's clock, until one of them leads.
pub async fn form_cluster(nodes: &std::collections::BTreeMap<NodeId, Option<SimNode>>, n: NodeId) {
    let members = (1..=n)
        .map(|id| (id, BasicNode::new(format!("sim-{id}"))))
        .collect::<std::collections::BTreeMap<_, _>>();
    nodes[&1]
        .as_ref()
        .expect("node 1 running")
        .raft
        .initialize(members)
        .await
        .expect("a new cluster initializes");
    while !nodes.values().flatten().any(SimNode::leads) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One simulated registry node: its store on disk, its Raft, its deadline task.
pub struct SimNode {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachineStore,
    deadlines: tokio::task::JoinHandle<()>,
    batch: Batcher,
    net: SimNet,
}

impl SimNode {
    /// Open the store under `dir` (restoring what is there) and join the simulated network.
    pub async fn start(id: NodeId, dir: &Path, net: &SimNet) -> Result<SimNode, NodeError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Raft(format!("creating {}: {e}", dir.display())))?;
        let cfg = NodeConfig::new(id, ([127, 0, 0, 1], 0).into(), dir.to_path_buf());
        let (log, sm) = store::open(&dir.join("registry.redb"))?;
        let factory = SimFactory {
            from: id,
            net: net.clone(),
        };
        let raft = Raft::new(id, raft_config(&cfg)?, factory, log, sm.clone())
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        net.0.lock().unwrap().nodes.insert(id, raft.clone());
        let batch = Batcher::start(raft.clone(), sm.clock.clone());
        let deadlines = tokio::spawn(deadline_loop(id, raft.clone(), sm.clone(), batch.clone()));
        Ok(SimNode {
            id,
            raft,
            state: sm,
            deadlines,
            batch,
            net: net.clone(),
        })
    }

    /// The node's batcher, which stamps and orders its proposals (one per node, as in `orbitd`).
    pub fn batch(&self) -> Batcher {
        self.batch.clone()
    }

    /// Stop as a crash would (what was flushed stays on disk).
    pub async fn crash(self) {
        self.net.0.lock().unwrap().nodes.remove(&self.id);
        self.deadlines.abort();
        let _ = self.deadlines.await;
        let _ = self.raft.shutdown().await;
    }

    /// The index it has applied up to, and its orbit state as JSON: equal on two nodes when
    /// they applied the same log to the same state.
    pub fn applied(&self) -> (Option<u64>, String) {
        let d = self.state.data.read().unwrap();
        let json = serde_json::to_string(&d.orbit).expect("the orbit state serialises");
        (d.last_applied.map(|l| l.index), json)
    }

    /// Whether its event backlog holds the whole committed history (it never started from a
    /// snapshot nor evicted an entry).
    pub fn has_whole_history(&self) -> bool {
        self.state
            .complete_after
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    }

    /// Whether this node leads now, as it sees it.
    pub fn leads(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(self.id) && m.state.is_leader()
    }

    /// Propose at this node (which must lead), stamped with the (simulated) time; the log
    /// index and outcome when committed within `timeout`.
    pub async fn propose(
        &self,
        cmd: Command,
        timeout: Duration,
    ) -> Option<(u64, Result<Event, Rejection>)> {
        self.propose_all(vec![cmd], timeout).await.pop().flatten()
    }

    /// Propose `cmds` at once (as concurrent clients would; the leader may batch them into
    /// one entry); each one's index and outcome if committed within `timeout`.
    pub async fn propose_all(
        &self,
        cmds: Vec<Command>,
        timeout: Duration,
    ) -> Vec<Option<(u64, Result<Event, Rejection>)>> {
        let pending: Vec<_> = cmds.into_iter().map(|c| self.batch.submit(c)).collect();
        let until = tokio::time::Instant::now() + timeout;
        let mut out = vec![];
        for rx in pending {
            out.push(match tokio::time::timeout_at(until, rx).await {
                Ok(Ok(Ok(w))) => Some(w),
                _ => None,
            });
        }
        out
    }
}

/// The (simulated) time, as the state machine gets it.
pub fn now_ms() -> orbit_state::Millis {
    wall_ms()
}
