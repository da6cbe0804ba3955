//! Three registry nodes in one process, talking gRPC over loopback, each with its own redb file:
//! proposals through any node, the leader stopped and the cluster going on, a node restarted
//! from its disk catching up, and a Raft RPC meant for another node refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use orbit_registry::pb;
use orbit_registry::store::Applied;
use orbit_registry::{Node, NodeConfig, Request};
use orbit_state::{CallInfo, Command, Event, LotConfig, SlotChoice};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn lot() -> LotConfig {
    LotConfig {
        tenant: "example.com".into(),
        park_ext: "700".into(),
        first_slot: 701,
        last_slot: 720,
        parking_ms: 90_000,
        recall_ring_ms: 20_000,
        fallback: None,
        choice: SlotChoice::FirstFree,
    }
}

fn park(n: u32) -> Command {
    Command::Park {
        lot: lot().key(),
        slot: None,
        call: CallInfo {
            caller_uri: format!("sip:{n}@example.com"),
            caller_display: None,
            parker: "1002".into(),
            edge: "site-a".into(),
            call_id: format!("c{n}"),
            local_tag: "l".into(),
            remote_tag: "r".into(),
            codec: None,
            trace: None,
        },
    }
}

/// Three nodes' addresses and data directories (removed at the end).
struct Cluster {
    root: PathBuf,
    addrs: BTreeMap<u64, SocketAddr>,
}

impl Cluster {
    fn new(tag: &str) -> Cluster {
        Cluster {
            root: std::env::temp_dir().join(format!("orbit-{tag}-{}", std::process::id())),
            addrs: (1..=3).map(|i| (i, free_addr())).collect(),
        }
    }

    fn cfg(&self, i: u64) -> NodeConfig {
        NodeConfig::new(i, self.addrs[&i], self.root.join(format!("n{i}")))
    }

    /// Start the three nodes and initialise the cluster on node 1.
    async fn start(&self) -> BTreeMap<u64, Node> {
        let mut nodes = BTreeMap::new();
        for i in 1..=3 {
            nodes.insert(i, Node::start(self.cfg(i)).await.unwrap());
        }
        nodes[&1].initialize(&self.addrs).await.unwrap();
        nodes
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn leader_of(nodes: &BTreeMap<u64, Node>) -> u64 {
    let t0 = Instant::now();
    loop {
        for n in nodes.values() {
            if let Some(l) = n.raft.metrics().borrow().current_leader {
                if nodes.contains_key(&l) {
                    return l;
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Propose through `via`, retrying while the cluster has no leader (bounded).
async fn propose(node: &Node, cmd: Command) -> orbit_registry::Committed {
    let t0 = Instant::now();
    loop {
        match node.propose(cmd.clone()).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "proposal never committed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn wait_applied(node: &Node, index: u64) {
    let t0 = Instant::now();
    while node
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index)
        .unwrap_or(0)
        < index
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node {} never applied {index}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_commit_fail_over_and_restart_from_disk() {
    let c = Cluster::new("cluster");
    let (addrs, cfg) = (c.addrs.clone(), |i: u64| c.cfg(i));
    let mut nodes = c.start().await;
    let leader = leader_of(&nodes).await;
    let follower = *nodes.keys().find(|k| **k != leader).unwrap();

    // Through a follower: forwarded to the leader, ordered, applied everywhere.
    let c = propose(&nodes[&follower], Command::SetLot(lot())).await;
    assert!(matches!(c.outcome, Ok(Event::LotSet(_))));
    let p1 = propose(&nodes[&follower], park(1)).await;
    let p2 = propose(&nodes[&leader], park(2)).await;
    let slot = |c: &orbit_registry::Committed| match &c.outcome {
        Ok(Event::Parked(p)) => p.slot,
        o => panic!("{o:?}"),
    };
    assert_eq!((slot(&p1), slot(&p2)), (701, 702));
    for n in nodes.values() {
        wait_applied(n, p2.index).await;
        let slots: Vec<u32> = n.orbit().all_parked().map(|p| p.slot).collect();
        assert_eq!(slots, vec![701, 702], "node {}", n.id);
    }

    // A Raft RPC addressed to another node is refused.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs[&leader]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::raft_client::RaftClient::new(ch);
    let wrong = client
        .vote(pb::RaftRequest {
            to_node: 99,
            from_node: 1,
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);

    // Stop the leader: the other two elect one and go on; nothing committed is lost.
    let old = nodes.remove(&leader).unwrap();
    old.shutdown().await;
    let t0 = Instant::now();
    let survivor = *nodes.keys().next().unwrap();
    let p3 = propose(&nodes[&survivor], park(3)).await;
    let failover = t0.elapsed();
    eprintln!("leader {leader} stopped; next commit after {failover:?}");
    assert_eq!(slot(&p3), 703, "the new leader knows 701 and 702 are taken");
    assert!(
        failover < Duration::from_secs(3),
        "next commit {failover:?} after the leader stopped"
    );

    // The old leader restarts from its disk and catches up.
    let back = Node::start(cfg(leader)).await.unwrap();
    wait_applied(&back, p3.index).await;
    let slots: Vec<u32> = back.orbit().all_parked().map(|p| p.slot).collect();
    assert_eq!(slots, vec![701, 702, 703]);
    nodes.insert(leader, back);
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

fn expirations(n: &Node, park: u64) -> Vec<(u64, u64)> {
    n.state
        .events
        .lock()
        .unwrap()
        .iter()
        .flat_map(|a| a.done.iter().map(|(_, e)| e))
        .filter_map(|e| match e {
            Event::Expired(p) if p.id == park => match p.phase {
                orbit_state::Phase::Recalling { since, .. } => Some((since, p.deadline)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Leases that ran out while there was no leader are not lapsed in a new leader's first
/// seconds: an edge whose renewals found no leader renews within them and keeps its parked
/// calls (without the grace, the new leader lapsed both at once). An edge that does not renew
/// lapses once they are over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_gives_edges_time_to_renew_leases_that_ran_out_while_there_was_none() {
    let c = Cluster::new("grace");
    let mut nodes = c.start().await;
    let leader = leader_of(&nodes).await;
    propose(&nodes[&leader], Command::SeedLot(lot())).await;
    let lease = |edge: &str| Command::Lease {
        edge: edge.into(),
        ttl_ms: 1500,
        incarnation: 1,
        replaces: 0,
        sip: None,
        load: Default::default(),
    };
    let mut parks = vec![];
    for (n, edge) in [(1, "site-a"), (2, "site-b")] {
        let mut cmd = park(n);
        if let Command::Park { call, .. } = &mut cmd {
            call.edge = edge.into();
        }
        match propose(&nodes[&leader], cmd).await.outcome {
            Ok(Event::Parked(p)) => parks.push(p.id),
            o => panic!("{o:?}"),
        }
    }
    for edge in ["site-a", "site-b"] {
        propose(&nodes[&leader], lease(edge)).await;
    }
    // The quorum lost for longer than the leases (a follower first, so that the leader can
    // commit nothing more): both run out with no leader.
    let kept = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    let stopped: Vec<u64> = [1, 2, 3]
        .into_iter()
        .filter(|&i| i != kept && i != leader)
        .chain([leader])
        .collect();
    for i in &stopped {
        nodes.remove(i).unwrap().shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for &i in &stopped {
        nodes.insert(i, Node::start(c.cfg(i)).await.unwrap());
    }
    let elected = Instant::now();
    let leader = leader_of(&nodes).await;
    // Site A renews as soon as there is a leader again (its retries would), and then every
    // third of its lease; site B never does.
    let t0 = Instant::now();
    while nodes[&leader].orbit().parked(parks[1]).is_some() {
        match propose(&nodes[&leader], lease("site-a")).await.outcome {
            Ok(Event::LeaseGranted { .. }) => {}
            o => panic!("site A's renewal: {o:?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "site B's lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        elected.elapsed() >= Duration::from_secs(4),
        "site B's lease lapsed {:?} after the quorum came back",
        elected.elapsed()
    );
    assert!(
        nodes[&leader].orbit().parked(parks[0]).is_some(),
        "site A renewed in time and keeps its parked call"
    );
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

async fn wait_expired(n: &Node, park: u64) -> (u64, u64) {
    let t0 = Instant::now();
    loop {
        if let Some(x) = expirations(n, park).first() {
            return *x;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "park {park} never expired on node {}",
            n.id
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fire_once_never_early_and_survive_the_leader() {
    let c = Cluster::new("deadlines");
    let mut nodes = c.start().await;
    let leader = leader_of(&nodes).await;
    let mut short = lot();
    short.parking_ms = 800;
    propose(&nodes[&leader], Command::SetLot(short)).await;
    let parked = |c: &orbit_registry::Committed| match &c.outcome {
        Ok(Event::Parked(p)) => p.id,
        o => panic!("{o:?}"),
    };

    // With a steady leader: fired once, at or after the deadline, promptly.
    let a = parked(&propose(&nodes[&leader], park(1)).await);
    let (since, deadline) = wait_expired(&nodes[&leader], a).await;
    assert!(since >= deadline, "expired {} ms early", deadline - since);
    assert!(
        since - deadline < 500,
        "expired {} ms late",
        since - deadline
    );

    // The leader dies before the next deadline: the new leader fires it, once, not early.
    let b = parked(&propose(&nodes[&leader], park(2)).await);
    nodes.remove(&leader).unwrap().shutdown().await;
    let survivor = *nodes.keys().next().unwrap();
    let (since, deadline) = wait_expired(&nodes[&survivor], b).await;
    assert!(since >= deadline, "expired {} ms early", deadline - since);
    assert!(
        since - deadline < 2_000,
        "expired {} ms late after failover",
        since - deadline
    );
    eprintln!(
        "after failover, park {b} expired {} ms after its deadline",
        since - deadline
    );
    // Let any duplicate attempt come through, then count on every survivor.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in nodes.values() {
        assert_eq!(expirations(n, a).len(), 1, "node {}: park {a}", n.id);
        assert_eq!(expirations(n, b).len(), 1, "node {}: park {b}", n.id);
    }

    // An edge that stops renewing its lease loses its parked call, once, after the lease ends.
    let via = *nodes.keys().next().unwrap();
    propose(
        &nodes[&via],
        Command::Lease {
            edge: "site-x".into(),
            ttl_ms: 300,
            incarnation: 0,
            replaces: 0,
            sip: None,
            load: Default::default(),
        },
    )
    .await;
    let mut c = park(3);
    if let Command::Park { call, .. } = &mut c {
        call.edge = "site-x".into();
    }
    let lost_park = parked(&propose(&nodes[&via], c).await);
    let t0 = Instant::now();
    loop {
        let lapses: Vec<Vec<u64>> = nodes[&via]
            .state
            .events
            .lock()
            .unwrap()
            .iter()
            .flat_map(|a| a.done.iter().map(|(_, e)| e))
            .filter_map(|e| match e {
                Event::LeaseLapsed { lost, .. } => Some(lost.iter().map(|p| p.id).collect()),
                _ => None,
            })
            .collect();
        if !lapses.is_empty() {
            assert_eq!(lapses, vec![vec![lost_park]]);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(nodes[&via].orbit().parked(lost_park).is_none());
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

/// Read `n` items (entries) from a watch stream (bounded wait).
async fn take(s: &mut tonic::Streaming<pb::WatchItem>, n: usize) -> Vec<Applied> {
    let mut out = vec![];
    while out.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .expect("stream ended");
        match item.item {
            Some(pb::watch_item::Item::Event(e)) => {
                let events: Vec<Event> = serde_json::from_slice(&e).unwrap();
                let req: Request = serde_json::from_slice(&item.command).unwrap();
                assert_eq!(events.len(), req.cmds.len(), "an event per command");
                out.push(Applied {
                    index: item.index,
                    at: req.at,
                    done: req.cmds.into_iter().zip(events).collect(),
                })
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_an_index_without_missing_or_repeating() {
    let c = Cluster::new("watch");
    let (addrs, cfg) = (c.addrs.clone(), |i: u64| c.cfg(i));
    let mut nodes = c.start().await;
    let leader = leader_of(&nodes).await;
    let follower = *nodes.keys().find(|k| **k != leader).unwrap();
    let watch = |after: u64| {
        let addr = addrs[&follower];
        async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            pb::registry_client::RegistryClient::new(ch)
                .watch(pb::WatchRequest { after_index: after })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut s = watch(0).await;
    propose(&nodes[&leader], Command::SetLot(lot())).await;
    for n in 1..=3 {
        propose(&nodes[&leader], park(n)).await;
    }
    let first = take(&mut s, 4).await;
    drop(s); // the watcher disconnects...
    for n in 4..=6 {
        propose(&nodes[&leader], park(n)).await;
    }
    // ...a refused command in between moves the log but is no event...
    let full = Command::Claim {
        tenant: "example.com".into(),
        slot: 799,
        park: None,
        by: "x".into(),
    };
    assert!(propose(&nodes[&leader], full).await.outcome.is_err());
    propose(&nodes[&leader], park(7)).await;
    // ...and resumes after the last index it saw.
    let mut s = watch(first.last().unwrap().index).await;
    let rest = take(&mut s, 4).await;
    let all: Vec<_> = first.iter().chain(rest.iter()).cloned().collect();
    let indexes: Vec<u64> = all.iter().map(|a| a.index).collect();
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "in log order, no repeats: {indexes:?}"
    );
    // Exactly what the leader applied.
    let leader_events: Vec<Applied> = nodes[&leader]
        .state
        .events
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(all, leader_events);
    // The commands with their times rebuild the leader's state on a replica of one's own.
    let mut replica = orbit_state::Orbit::new();
    for a in &all {
        for (cmd, ev) in &a.done {
            assert_eq!(replica.apply(a.at, cmd).as_ref(), Ok(ev));
        }
    }
    let slots: Vec<u32> = all
        .iter()
        .flat_map(|a| a.done.iter().map(|(_, e)| e))
        .filter_map(|e| match e {
            Event::Parked(p) => Some(p.slot),
            _ => None,
        })
        .collect();
    assert_eq!(slots, (701..=707).collect::<Vec<_>>());
    // Nothing more comes until something happens.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.message())
            .await
            .is_err()
    );
    drop(s);

    // A watcher too far behind what a node still has (here: a node restarted from a snapshot)
    // first gets the whole state, then the events after it.
    nodes[&follower].raft.trigger().snapshot().await.unwrap();
    let t0 = Instant::now();
    while nodes[&follower].raft.metrics().borrow().snapshot.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes.remove(&follower).unwrap().shutdown().await;
    nodes.insert(follower, Node::start(cfg(follower)).await.unwrap());
    let mut s = watch(0).await;
    let first = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(pb::watch_item::Item::Resync(state)) = first.item else {
        panic!("expected a resync, got {first:?}");
    };
    let orbit: orbit_state::Orbit = serde_json::from_slice(&state).unwrap();
    let mut slots: Vec<u32> = orbit.all_parked().map(|p| p.slot).collect();
    slots.sort();
    assert_eq!(slots, (701..=707).collect::<Vec<_>>());
    propose(&nodes[&leader], park(8)).await;
    let next = take(&mut s, 1).await;
    assert!(next[0].index > first.index);
    assert!(matches!(&next[0].done[..], [(_, Event::Parked(p))] if p.slot == 708));
    drop(s);
    for (_, n) in nodes {
        n.shutdown().await;
    }
}
