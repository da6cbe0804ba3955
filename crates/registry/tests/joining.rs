//! The registry's StatefulSet scaled up and down, in one process over loopback gRPC: nodes
//! started with `join` make themselves voters; the leader removes members gone longer than
//! `remove_unreachable`, one at a time and never below three voters; a removed node that comes
//! back with its old disk joins again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use orbit_registry::{Node, NodeConfig};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

const GONE: Duration = Duration::from_secs(2);

struct Cluster {
    root: PathBuf,
    addrs: BTreeMap<u64, SocketAddr>,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    fn cfg(&self, i: u64) -> NodeConfig {
        let mut c = NodeConfig::new(i, self.addrs[&i], self.root.join(format!("n{i}")));
        c.remove_unreachable = Some(GONE);
        // The first three nodes' addresses: what a new pod is told.
        c.join = (1..=3).map(|j| self.addrs[&j].to_string()).collect();
        c
    }

    async fn start(&mut self, i: u64) {
        let node = Node::start(self.cfg(i)).await.unwrap();
        self.nodes.insert(i, node);
    }

    async fn stop(&mut self, i: u64) {
        self.nodes.remove(&i).unwrap().shutdown().await;
    }

    /// The voters as the leader among the running nodes has them.
    fn voters(&self) -> Option<BTreeSet<u64>> {
        self.nodes.values().find_map(|n| {
            let m = n.raft.metrics().borrow().clone();
            (m.current_leader == Some(n.id))
                .then(|| m.membership_config.membership().voter_ids().collect())
        })
    }

    async fn wait_voters(&self, want: &[u64], within: Duration) {
        let want: BTreeSet<u64> = want.iter().copied().collect();
        let t0 = Instant::now();
        while self.voters().as_ref() != Some(&want) {
            assert!(
                t0.elapsed() < within,
                "voters {:?}, never {want:?}",
                self.voters()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_by_themselves_and_the_long_gone_are_removed_down_to_three_voters() {
    let mut c = Cluster {
        root: std::env::temp_dir().join(format!("orbit-joining-{}", std::process::id())),
        addrs: (1..=5).map(|i| (i, free_addr())).collect(),
        nodes: BTreeMap::new(),
    };
    for i in 1..=3 {
        c.start(i).await;
    }
    let first: BTreeMap<u64, SocketAddr> = (1..=3).map(|i| (i, c.addrs[&i])).collect();
    c.nodes[&1].initialize(&first).await.unwrap();
    c.wait_voters(&[1, 2, 3], Duration::from_secs(10)).await;

    // Scaled up: two new pods join, each as a voter.
    c.start(4).await;
    c.start(5).await;
    c.wait_voters(&[1, 2, 3, 4, 5], Duration::from_secs(20))
        .await;

    // Node 5 goes away: once gone longer than the wait, the leader removes it.
    let t0 = Instant::now();
    c.stop(5).await;
    c.wait_voters(&[1, 2, 3, 4], Duration::from_secs(15)).await;
    // The wait runs from its last answer, which the leader asks for once a second.
    assert!(
        t0.elapsed() >= GONE - Duration::from_secs(1),
        "removed before the wait was up: {:?}",
        t0.elapsed()
    );

    // It comes back with its old disk (which still counts it a voter): it joins again.
    c.start(5).await;
    c.wait_voters(&[1, 2, 3, 4, 5], Duration::from_secs(20))
        .await;

    // Scaled down to three: 5 and 4 go, and are removed.
    c.stop(5).await;
    c.stop(4).await;
    c.wait_voters(&[1, 2, 3], Duration::from_secs(20)).await;

    // A third voter down is an outage to look at, not a change to make: it stays a voter.
    c.stop(3).await;
    tokio::time::sleep(GONE * 3).await;
    c.wait_voters(&[1, 2, 3], Duration::from_secs(5)).await;
    for i in [1, 2] {
        c.stop(i).await;
    }
    let _ = std::fs::remove_dir_all(&c.root);
}
