//! Draining an edge: nothing new is taken (503 with Retry-After, OPTIONS too), what is up goes
//! on until it ends or the drain's time is up, and then the edge leaves the registry.

use orbit_state::{Command, Event};

use super::registry::{registry_net, Registry};
use super::*;

fn assert_refused_for_now(m: &Message) {
    assert_eq!(m.code(), 503, "{}", m.head_text());
    assert_eq!(
        m.header_other("Retry-After"),
        Some(crate::draining::RETRY_AFTER)
    );
}

#[test]
fn a_draining_edge_refuses_new_calls_registrations_and_probes_and_lets_its_calls_end() {
    let mut net = Net::new();
    let (ok, _) = answered_call(&mut net);
    net.take(ALICE);
    net.take(BOB1);
    net.edge.begin_drain(net.now, Duration::from_secs(30));
    assert!(!net.edge.drained(), "a call is still up");
    // New calls, a load balancer's OPTIONS probe, a registration, a lamp: come back later.
    net.send(ALICE, &invite("1003", "new1", ""));
    assert_refused_for_now(&net.one(ALICE));
    net.send(ALICE, &options("probe1", ""));
    assert_refused_for_now(&net.one(ALICE));
    let reg = "REGISTER sip:orbit.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6009;branch=z9hG4bKd1\nMax-Forwards: 70\nFrom: <sip:1003@orbit.test>;tag=r\nTo: <sip:1003@orbit.test>\nCall-ID: reg-d\nCSeq: 1 REGISTER\nContact: <sip:1003@127.0.0.1:6009>\nExpires: 600\nContent-Length: 0\n\n";
    net.send("127.0.0.1:6009", reg);
    assert_refused_for_now(&net.one("127.0.0.1:6009"));
    // The call up goes on: its ACK and its BYE are relayed.
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    assert_eq!(net.one(ALICE).code(), 200);
    let bye = net.one(BOB1);
    net.send_msg(BOB1, answer(&bye, 200, "bob", None, BOB1));
    // Nothing left (one site: no registry to tell): drained.
    assert_eq!(net.edge.active_calls(), 0);
    assert!(net.edge.drained());
}

#[test]
fn a_drain_ends_what_is_left_when_its_time_is_up() {
    let mut net = Net::new();
    let (ok, _) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(ALICE);
    net.take(BOB1);
    net.edge.begin_drain(net.now, Duration::from_secs(5));
    // A second drain does not move the deadline.
    net.edge.begin_drain(net.now, Duration::from_secs(300));
    net.advance(Duration::from_millis(4_900));
    assert!(net.take(ALICE).is_empty() && net.take(BOB1).is_empty());
    net.advance(Duration::from_millis(200));
    let to_alice = net.one(ALICE);
    let to_bob = net.one(BOB1);
    assert_eq!(*to_alice.method(), orbit_sip::Method::Bye);
    assert_eq!(*to_bob.method(), orbit_sip::Method::Bye);
    net.send_msg(BOB1, answer(&to_bob, 200, "bob", None, BOB1));
    let mut r = orbit_sip::Writer::response(200, "OK");
    for v in to_alice.values(Name::Via) {
        r.header("Via", v);
    }
    r.header("From", to_alice.header(Name::From).unwrap());
    r.header("To", to_alice.header(Name::To).unwrap());
    r.header("Call-ID", to_alice.call_id());
    r.header("CSeq", to_alice.header(Name::CSeq).unwrap());
    net.send_msg(ALICE, r.finish(None, b""));
    net.advance(Duration::from_secs(1));
    assert_eq!(net.edge.active_calls(), 0);
    assert!(net.edge.drained());
}

#[test]
fn an_operators_drain_in_the_log_drains_the_edge_which_leaves_the_registry_once_empty() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    let at = net.edge.now_ms(net.now);
    // Another edge's drain is not this one's.
    reg.feed(
        &mut net,
        at,
        Command::Lease {
            edge: "site-b".into(),
            ttl_ms: 15_000,
            incarnation: 5,
            replaces: 0,
            sip: None,
            load: Default::default(),
        },
    );
    reg.feed(
        &mut net,
        at,
        Command::Drain {
            edge: "site-b".into(),
        },
    );
    reg.serve(&mut net);
    net.send(ALICE, &options("probe0", ""));
    assert_eq!(net.one(ALICE).code(), 200);
    // An operator drains this one (admin API): the edge sees it in its watch.
    reg.feed(
        &mut net,
        at,
        Command::Drain {
            edge: "site-a".into(),
        },
    );
    net.send(ALICE, &options("probe1", ""));
    assert_refused_for_now(&net.one(ALICE));
    // With nothing up, it leaves at once: one Release naming its own process.
    reg.serve(&mut net);
    let release = reg.events.iter().rev().find_map(|e| match e {
        Event::LeaseLapsed {
            edge,
            released: true,
            ..
        } => Some(edge.clone()),
        _ => None,
    });
    assert_eq!(release.as_deref(), Some("site-a"));
    assert!(net.edge.drained());
    assert!(reg.orbit.leases().all(|(e, _)| e != "site-a"));
}

#[test]
fn sigterm_says_so_in_the_log_so_that_no_edge_hands_this_one_anything() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    let (ok, _) = answered_call(&mut net);
    net.edge.begin_drain(net.now, Duration::from_secs(30));
    reg.serve(&mut net);
    assert!(reg.orbit.is_draining("site-a"));
    assert!(!net.edge.drained());
    // The call ends; the edge leaves the registry.
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    net.take(ALICE);
    let bye = net.one(BOB1);
    net.send_msg(BOB1, answer(&bye, 200, "bob", None, BOB1));
    assert!(
        !net.edge.drained(),
        "not before the registry has the release"
    );
    reg.serve(&mut net);
    assert!(net.edge.drained());
    assert!(!reg.orbit.is_draining("site-a"));
}

/// The log a new process of site-a finds: its predecessor (incarnation 77) leased the name,
/// was drained by an operator and left.
fn drained_predecessor() -> Vec<Command> {
    vec![
        Command::Lease {
            edge: "site-a".into(),
            ttl_ms: 15_000,
            incarnation: 77,
            replaces: 0,
            sip: None,
            load: Default::default(),
        },
        Command::Drain {
            edge: "site-a".into(),
        },
        Command::Release {
            edge: "site-a".into(),
            incarnation: 77,
        },
    ]
}

#[test]
fn a_process_restarted_under_a_drained_edges_name_is_not_drained_again_by_the_old_drain() {
    // The log a new process of site-a reads from its start.
    let mut net = registry_net();
    let mut reg = Registry::default();
    let at = net.edge.now_ms(net.now);
    for cmd in drained_predecessor() {
        reg.feed(&mut net, at, cmd);
    }
    reg.serve(&mut net);
    assert!(!net.edge.drained());
    net.send(ALICE, &options("probe0", ""));
    assert_eq!(
        net.one(ALICE).code(),
        200,
        "the old drain was taken as this process's"
    );
    // A drain of this process is still one.
    reg.feed(
        &mut net,
        at,
        Command::Drain {
            edge: "site-a".into(),
        },
    );
    net.send(ALICE, &options("probe1", ""));
    assert_refused_for_now(&net.one(ALICE));
}

#[test]
fn an_old_drain_and_this_processs_lease_in_one_watch_entry_do_not_drain_it() {
    // A new process's first watch batch holds its predecessor's lease, drain and release and
    // its own lease after them (the leader batched them into one entry).
    let mut net = registry_net();
    let mut reg = Registry::default();
    let at = net.edge.now_ms(net.now);
    let mut cmds = drained_predecessor();
    let props = net.edge.take_proposals();
    let lease = props
        .iter()
        .find(|p| matches!(p.cmd, Command::Lease { .. }))
        .expect("the edge asks for its lease");
    cmds.push(lease.cmd.clone());
    for c in &cmds {
        reg.orbit.apply(at, c).expect("applies");
    }
    net.edge.on_orbit_watch(net.now, 1, at, cmds);
    for p in props {
        let r = reg.orbit.apply(at, &p.cmd);
        net.edge
            .on_orbit_outcome(net.now, p.token, 1, r.map_err(Into::into));
    }
    net.collect();
    net.send(ALICE, &options("probe0", ""));
    assert_eq!(
        net.one(ALICE).code(),
        200,
        "the old drain was taken as this process's"
    );
    assert!(!net.edge.drained());
}
