//! The registry's mutual TLS and who may do what (issue 11): three nodes in one process, each
//! serving gRPC with a certificate from one CA, Raft between them and proposals forwarded over
//! TLS; then strangers try: no client certificate, a certificate from another CA, an edge
//! proposing for another site or calling Raft, a node speaking as another, a reader changing
//! the cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use orbit_registry::dev_pki::DevCa;
use orbit_registry::pb;
use orbit_registry::pb::registry_client::RegistryClient;
use orbit_registry::{Caller, Link, Node, NodeConfig};
use orbit_state::{CallInfo, Command, Event, LotConfig, SlotChoice};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

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

fn park_at(edge: &str, n: u32) -> Command {
    Command::Park {
        lot: lot().key(),
        slot: None,
        call: CallInfo {
            caller_uri: format!("sip:{n}@example.com"),
            caller_display: None,
            parker: "1002".into(),
            edge: edge.into(),
            call_id: format!("c{n}"),
            local_tag: "l".into(),
            remote_tag: "r".into(),
            codec: None,
            trace: None,
        },
    }
}

/// Three TLS nodes, initialised, and the CA that signed them.
struct Cluster {
    root: PathBuf,
    ca: DevCa,
    addrs: BTreeMap<u64, SocketAddr>,
    /// With separate listeners: each node's (edge, admin) addresses.
    split: BTreeMap<u64, (SocketAddr, SocketAddr)>,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    /// With `split`, each node serves edges and operators on listeners of their own.
    async fn start_with(split: bool) -> Cluster {
        let ca = DevCa::new().unwrap();
        let root = std::env::temp_dir().join(format!("orbit-mtls-{}", rand::random::<u64>()));
        let addrs: BTreeMap<u64, SocketAddr> = (1..=3).map(|i| (i, free_addr())).collect();
        let split: BTreeMap<u64, (SocketAddr, SocketAddr)> = match split {
            true => (1..=3).map(|i| (i, (free_addr(), free_addr()))).collect(),
            false => BTreeMap::new(),
        };
        let mut nodes = BTreeMap::new();
        for i in 1..=3 {
            let mut cfg = NodeConfig::new(i, addrs[&i], root.join(format!("n{i}")));
            cfg.tls = Some(ca.tls(&Caller::Node(i), &["127.0.0.1"]).unwrap());
            if let Some((edge, admin)) = split.get(&i) {
                cfg.edge_listen = Some(*edge);
                cfg.admin_listen = Some(*admin);
            }
            nodes.insert(i, Node::start(cfg).await.unwrap());
        }
        nodes[&1].initialize(&addrs).await.unwrap();
        Cluster {
            root,
            ca,
            addrs,
            split,
            nodes,
        }
    }

    async fn leader(&self) -> u64 {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.nodes[&1].raft.metrics().borrow().current_leader {
                return l;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no leader elected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A follower's address: what it takes it forwards to the leader, over TLS.
    async fn follower(&self) -> SocketAddr {
        let leader = self.leader().await;
        self.addrs[&if leader == 1 { 2 } else { 1 }]
    }

    /// A channel to `addr` trusting the cluster's CA, showing `who`'s certificate (none: no
    /// client certificate at all).
    fn channel(&self, addr: SocketAddr, who: Option<&Caller>) -> Channel {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.ca_pem()));
        if let Some(w) = who {
            let (cert, key) = self.ca.issue(w, &[]).unwrap();
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    }

    fn registry(&self, addr: SocketAddr, who: Option<&Caller>) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel(addr, who))
    }

    async fn shutdown(self) {
        for (_, n) in self.nodes {
            n.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Propose `cmd` as `client` (retrying while no leader is known); the status, or the outcome.
async fn propose(
    client: &mut RegistryClient<Channel>,
    cmd: &Command,
) -> Result<Result<Event, orbit_state::Rejection>, tonic::Status> {
    let t0 = Instant::now();
    loop {
        let req = pb::ProposeRequest {
            command: serde_json::to_vec(cmd).unwrap(),
            forwarded: false,
            edge: String::new(),
            request_id: String::new(),
        };
        match client.propose(req).await {
            Ok(r) => return Ok(serde_json::from_slice(&r.into_inner().outcome).unwrap()),
            Err(s) if s.code() == Code::Unavailable && t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => return Err(s),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_proposes_over_mutual_tls_through_a_follower_and_watches() {
    let c = Cluster::start().await;
    let follower = c.follower().await;
    let edge = c.ca.tls(&Caller::Edge("site-a".into()), &[]).unwrap();
    let link = Link::new(&[follower.to_string()], Some(&edge)).unwrap();
    let (_, r) = link.propose(&Command::SeedLot(lot())).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    let (_, r) = link.propose(&park_at("site-a", 1)).await.unwrap();
    assert!(matches!(r, Ok(Event::Parked(_))), "{r:?}");
    // The watch, as an edge reads it.
    let mut s = c
        .registry(follower, Some(&Caller::Edge("site-a".into())))
        .watch(pb::WatchRequest { after_index: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().is_some(), "the watch delivers");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_with_another_cas_gets_nothing() {
    let c = Cluster::start().await;
    let addr = c.follower().await;
    let mut anon = c.registry(addr, None);
    let s = anon.status(pb::StatusRequest {}).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let s = propose(&mut anon, &Command::SeedLot(lot()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let s = anon
        .watch(pb::WatchRequest { after_index: 0 })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let mut raft = pb::raft_client::RaftClient::new(c.channel(addr, None));
    let vote = pb::RaftRequest {
        to_node: 1,
        from_node: 2,
        payload: b"{}".to_vec(),
    };
    let s = raft.vote(vote).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // A certificate naming an admin, but from a CA of the stranger's own: no handshake.
    let other = DevCa::new().unwrap();
    let (cert, key) = other.issue(&Caller::Admin("mallory".into()), &[]).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(c.ca.ca_pem()))
        .identity(Identity::from_pem(cert, key));
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    let s = RegistryClient::new(ch)
        .remove(pb::NodeRequest {
            node: Some(pb::Member {
                id: 3,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    // Refused at the handshake (an alert, or the connection closed): no RPC ran, so no status
    // of the service's own.
    assert!(
        format!("{s:?}").contains("tonic::transport::Error"),
        "refused at the handshake: {s:?}"
    );
    // A plaintext client cannot talk to it at all.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    assert!(RegistryClient::new(plain)
        .status(pb::StatusRequest {})
        .await
        .is_err());
    assert_eq!(
        c.nodes[&1]
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count(),
        3
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_acts_only_for_its_own_site_and_only_nodes_speak_raft() {
    let c = Cluster::start().await;
    let addr = c.follower().await;
    let site_a = Caller::Edge("site-a".into());
    let site_b = Caller::Edge("site-b".into());
    let mut a = c.registry(addr, Some(&site_a));
    let mut b = c.registry(addr, Some(&site_b));
    propose(&mut a, &Command::SeedLot(lot()))
        .await
        .unwrap()
        .unwrap();
    let Ok(Event::Parked(p)) = propose(&mut a, &park_at("site-a", 1)).await.unwrap() else {
        panic!("site-a parks its own call")
    };
    // Site B parks in site A's name, ends site A's park, fires its deadline, lapses its lease,
    // changes or deletes a lot (an admin's to do).
    let end = Command::End {
        park: p.id,
        reason: orbit_state::EndReason::HungUp,
    };
    for cmd in [
        park_at("site-a", 2),
        end.clone(),
        Command::Expire { park: p.id },
        Command::LeaseLapse {
            edge: "site-a".into(),
        },
        Command::Lease {
            edge: "site-a".into(),
            ttl_ms: 10_000,
            incarnation: 1,
            replaces: 0,
            sip: None,
            load: Default::default(),
        },
        Command::SetLot(lot()),
        Command::DeleteLot(lot().key()),
    ] {
        let s = propose(&mut b, &cmd).await.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{cmd:?}: {s:?}");
        assert!(s.message().contains("spiffe://orbit/edge/site-b"), "{s:?}");
    }
    assert!(c.nodes[&1].orbit().parked(p.id).is_some(), "still parked");
    // A retrieve from site B claims site A's park: that is what a claim is for.
    let claim = Command::Claim {
        tenant: "example.com".into(),
        slot: p.slot,
        park: Some(p.id),
        by: "3001".into(),
    };
    let r = propose(&mut b, &claim).await.unwrap();
    assert!(matches!(r, Ok(Event::Claimed { .. })), "{r:?}");

    // An edge is no Raft peer; a node is one only as itself.
    let vote = |from: u64| pb::RaftRequest {
        to_node: 1,
        from_node: from,
        payload: b"{}".to_vec(),
    };
    let mut raft = pb::raft_client::RaftClient::new(c.channel(c.addrs[&1], Some(&site_a)));
    let s = raft.vote(vote(2)).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut raft = pb::raft_client::RaftClient::new(c.channel(c.addrs[&1], Some(&Caller::Node(2))));
    let s = raft.vote(vote(3)).await.unwrap_err();
    assert_eq!(
        s.code(),
        Code::PermissionDenied,
        "node 2 speaking as node 3: {s:?}"
    );
    // Only the leader may ask a node to stand for election (a leadership transfer): not an
    // edge, not a follower.
    let leader = c.leader().await;
    let (target, follower) = match leader {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    let campaign = |from: u64| pb::RaftRequest {
        to_node: target,
        from_node: from,
        payload: vec![],
    };
    let mut raft = pb::raft_client::RaftClient::new(c.channel(c.addrs[&target], Some(&site_a)));
    let s = raft.campaign(campaign(leader)).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "an edge: {s:?}");
    let as_follower = Caller::Node(follower);
    let mut raft =
        pb::raft_client::RaftClient::new(c.channel(c.addrs[&target], Some(&as_follower)));
    let s = raft.campaign(campaign(follower)).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "a follower: {s:?}");
    assert_eq!(c.leader().await, leader, "nobody stood");

    // Membership is the admin's: not an edge's nor a reader's.
    let remove = || pb::NodeRequest {
        node: Some(pb::Member {
            id: 3,
            ..Default::default()
        }),
    };
    for who in [site_a, Caller::Reader("grafana".into())] {
        let s = c
            .registry(addr, Some(&who))
            .remove(remove())
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{who}: {s:?}");
    }
    // A node joins as itself only: not as another id, and not an edge or an admin's
    // certificate (an admin adds members with AddLearner).
    let join = |id: u64| pb::NodeRequest {
        node: Some(pb::Member {
            id,
            addr: "127.0.0.1:1".into(),
            ..Default::default()
        }),
    };
    for (who, id) in [
        (Caller::Node(2), 7),
        (Caller::Edge("site-a".into()), 7),
        (Caller::Admin("ops".into()), 7),
    ] {
        let s = c
            .registry(addr, Some(&who))
            .join(join(id))
            .await
            .unwrap_err();
        assert_eq!(
            s.code(),
            Code::PermissionDenied,
            "{who} as node {id}: {s:?}"
        );
    }
    let mut reader = c.registry(addr, Some(&Caller::Reader("grafana".into())));
    let s = propose(&mut reader, &park_at("site-a", 3))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let st = reader
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.voters.len(), 3, "a reader reads");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_separate_listeners_each_lets_in_only_its_own_kind_of_caller() {
    use orbit_registry::admin_pb::{admin_client::AdminClient, GetClusterStatusRequest};
    let c = Cluster::start_with(true).await;
    let leader = c.leader().await;
    let f = if leader == 1 { 2 } else { 1 };
    let (edge_at, admin_at) = c.split[&f];
    let peer_at = c.addrs[&f];
    // An edge proposes at a follower's edge listener (forwarded to the leader over the peer
    // listeners, as a node) and watches there.
    let site_a = Caller::Edge("site-a".into());
    let edge = c.ca.tls(&site_a, &[]).unwrap();
    let link = Link::new(&[edge_at.to_string()], Some(&edge)).unwrap();
    let (_, r) = link.propose(&Command::SeedLot(lot())).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    let mut w = c
        .registry(edge_at, Some(&site_a))
        .watch(pb::WatchRequest { after_index: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(w.message().await.unwrap().is_some(), "the watch delivers");
    // The edge's certificate opens nothing elsewhere: not the peer listener, not the admin one.
    for at in [peer_at, admin_at] {
        let s = propose(&mut c.registry(at, Some(&site_a)), &park_at("site-a", 1))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{at}: {s:?}");
        assert!(s.message().contains("may not use this listener"), "{s:?}");
    }
    let vote = pb::RaftRequest {
        to_node: f,
        from_node: leader,
        payload: b"{}".to_vec(),
    };
    let mut raft =
        pb::raft_client::RaftClient::new(c.channel(edge_at, Some(&Caller::Node(leader))));
    let s = raft.vote(vote).await.unwrap_err();
    assert_eq!(
        s.code(),
        Code::Unimplemented,
        "no Raft on the edge listener: {s:?}"
    );
    // Operators: the admin API on the admin listener, nowhere else; a node's certificate is
    // no operator's.
    let admin = Caller::Admin("ops".into());
    let status = |at, who: &Caller| {
        let mut a = AdminClient::new(c.channel(at, Some(who)));
        async move { a.get_cluster_status(GetClusterStatusRequest {}).await }
    };
    let s = status(admin_at, &admin).await.unwrap().into_inner();
    assert_eq!(s.leader_id, leader);
    let s = status(admin_at, &Caller::Reader("grafana".into())).await;
    assert!(s.is_ok(), "a reader reads: {s:?}");
    for at in [peer_at, edge_at] {
        let s = status(at, &admin).await.unwrap_err();
        assert_eq!(s.code(), Code::Unimplemented, "{at}: {s:?}");
        let s = c
            .registry(at, Some(&admin))
            .status(pb::StatusRequest {})
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{at}: {s:?}");
    }
    let s = status(admin_at, &Caller::Node(leader)).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // Health answers on every listener, to anyone who completes the handshake.
    for at in [peer_at, edge_at, admin_at] {
        let mut h = tonic_health::pb::health_client::HealthClient::new(c.channel(at, None));
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(r.is_ok(), "{at}: {r:?}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_asked_at_a_follower_goes_to_the_leaders_admin_listener_and_writes_wait_for_it()
{
    use orbit_registry::admin_pb::{admin_client::AdminClient, GetClusterStatusRequest};
    use orbit_registry::admin_pb::{ClusterStatus, MemberRequest};
    let c = Cluster::start_with(true).await;
    let leader = c.leader().await;
    let f = if leader == 1 { 2 } else { 1 };
    let admin = Caller::Admin("ops".into());
    let at = |addr| AdminClient::new(c.channel(addr, Some(&admin)));
    // Every node says where it serves operators; any node's status tells them all.
    let t0 = Instant::now();
    let status: ClusterStatus = loop {
        let s = at(c.split[&f].1)
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        // A follower that has not yet taken the first membership knows no members at all.
        if s.members.len() == 3 && s.members.iter().all(|m| !m.admin_addr.is_empty()) {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for m in &status.members {
        assert_eq!(m.admin_addr, c.split[&m.id].1.to_string(), "{status:?}");
    }
    // At the follower: UNAVAILABLE naming the leader; at the leader's admin listener, as the
    // status says (what orbitctl does), the transfer runs.
    let s = at(c.split[&f].1)
        .transfer_leadership(MemberRequest { id: f })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let leader_admin: SocketAddr = status
        .members
        .iter()
        .find(|m| m.id == leader)
        .unwrap()
        .admin_addr
        .parse()
        .unwrap();
    let mut first = at(leader_admin);
    let transfer =
        tokio::spawn(async move { first.transfer_leadership(MemberRequest { id: f }).await });
    // While the leader holds writes: a second transfer is refused, a proposal waits and then
    // commits (at the new leader).
    let batch = c.nodes[&leader].batcher();
    let t0 = Instant::now();
    while !batch.is_held() {
        assert!(t0.elapsed() < Duration::from_secs(5), "writes never held");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let s = at(leader_admin)
        .transfer_leadership(MemberRequest { id: f })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("under way"), "{s:?}");
    let edge = c.ca.tls(&Caller::Edge("site-a".into()), &[]).unwrap();
    let link = Link::new(&[c.split[&leader].0.to_string()], Some(&edge)).unwrap();
    let proposed = Instant::now();
    let (_, r) = link.propose(&Command::SeedLot(lot())).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    let waited = proposed.elapsed();
    let after = transfer.await.unwrap().unwrap().into_inner();
    assert_eq!(after.leader_id, f, "{after:?}");
    assert!(!batch.is_held(), "writes go on after the transfer");
    assert!(
        waited >= Duration::from_millis(100),
        "the proposal waited for the hand-over ({waited:?})"
    );
    c.shutdown().await;
}
