//! Park and retrieve across sites, end to end: three `orbitd run` processes (registry voter +
//! edge each) joined by the signed trunk, SIPp phones and real RTP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

#[test]
fn parked_at_site_a_retrieved_at_site_c_with_media_through_both_relays() {
    let s = Sites::start(&lot(90, 20));
    let (alice, alice_media, alice_relay) = park_at_a(&s);
    // Parked: music from relay A.
    alice_media.drain();
    let music = alice_media.listen(Duration::from_secs(1));
    assert!(
        music.len() >= 40,
        "music while parked: {} packets",
        music.len()
    );

    // Carol (3001) at site C dials 701.
    let carol_media = RtpPeer::bind();
    let carol = Sipp::new(&s.site[2], "uac_call.xml")
        .args(["-s", "701", "-au", "3001", "-ap", "pw3001", "-d", "2500"])
        .key("caller", "3001")
        .key("rtpport", &carol_media.port().to_string())
        .spawn();
    let carol_relay = relay(carol.wait_log("relay_port", Duration::from_secs(10)));
    let (c0, c1) = s.site[2].rtp;
    assert!(
        (c0..=c1).contains(&carol_relay.port()),
        "Carol talks to site C's relay ({carol_relay}), not site A's"
    );
    std::thread::sleep(Duration::from_millis(100));
    // Alice hears only Carol (no music), Carol only Alice: caller ⇄ relay A ⇄ relay C ⇄ Carol.
    assert_bridged(
        (&alice_media, alice_relay),
        (&carol_media, carol_relay),
        50,
        Duration::from_millis(400),
    );
    let c = carol.wait();
    assert!(c.ok(), "retriever: {}", c.errors);
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    assert!(
        s.log(2).contains("retrieving over the trunk"),
        "{}",
        s.log(2)
    );
    assert!(s.log(0).contains("retrieved"), "{}", s.log(0));
}

#[test]
fn two_retrievers_at_two_sites_racing_for_one_slot_get_exactly_one_200() {
    let s = Sites::start(&lot(90, 20));
    let (alice, _alice_media, _) = park_at_a(&s);
    let racer = |site: &Daemon, ext: &str| {
        let media = RtpPeer::bind();
        let r = Sipp::new(site, "uac_race.xml")
            .args([
                "-s",
                "701",
                "-au",
                ext,
                "-ap",
                &format!("pw{ext}"),
                "-d",
                "500",
            ])
            .key("caller", ext)
            .key("rtpport", &media.port().to_string())
            .spawn();
        (r, media)
    };
    let (b, _bm) = racer(&s.site[1], "2001");
    let (c, _cm) = racer(&s.site[2], "3001");
    let b = b.wait();
    let c = c.wait();
    assert!(b.ok(), "site B retriever: {}", b.errors);
    assert!(c.ok(), "site C retriever: {}", c.errors);
    let won = [&b, &c]
        .iter()
        .filter(|r| r.logs.contains("outcome=won"))
        .count();
    let lost = [&b, &c]
        .iter()
        .filter(|r| r.logs.contains("outcome=lost"))
        .count();
    assert_eq!((won, lost), (1, 1), "B: {}\nC: {}", b.logs, c.logs);
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
}

#[test]
fn recall_rings_the_parker_at_the_site_it_moved_to() {
    let s = Sites::start(&lot(3, 10));
    // Bob's desk phone is registered at site B now; he parks Alice through site A.
    let phone_media = RtpPeer::bind();
    let phone = s.site[1]
        .phone("1002", "uas_recall_answer.xml", &phone_media)
        .args(["-m", "1", "-d", "1500"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let (alice, _alice_media, _) = park_at_a(&s);
    let p = phone.wait();
    assert!(p.ok(), "parker's phone at site B: {}", p.errors);
    assert!(p.logs.contains("recall_slot=701"), "{}", p.logs);
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    assert!(s.log(0).contains("recall answered"), "{}", s.log(0));
}

/// The registry leader as node `at` sees it (0: none).
fn leader(s: &Sites, at: SocketAddr) -> u64 {
    let out = s
        .registry_cli(&["status", "--at", &at.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("leader:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `key=N` values in a log.
fn values(log: &str, key: &str) -> Vec<u64> {
    let pat = format!("{key}=");
    log.match_indices(&pat)
        .filter_map(|(i, _)| {
            log[i + pat.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn recall_fires_once_and_on_time_when_the_leader_is_killed_just_before_the_deadline() {
    let mut s = Sites::start(&lot(3, 10));
    let l = leader(&s, s.grpc[0]);
    assert!(l > 0, "a leader");
    // The call is held at a site whose process is not the leader's (each process is a voter
    // and an edge: killing the leader kills that edge too).
    let h = l as usize % 3;
    let phone_media = RtpPeer::bind();
    let phone = s.site[h]
        .phone("1002", "uas_recall_answer.xml", &phone_media)
        .args(["-m", "2", "-d", "500"])
        .spawn();
    let media = RtpPeer::bind();
    let alice = alice(&s.site[h], &media);
    let bob = bob_parks(&s.site[h]);
    let b = bob.wait();
    assert!(b.ok(), "parker: {}", b.errors);
    // The leader dies 300 ms before the deadline: the new one finds it overdue and fires it.
    std::thread::sleep(Duration::from_millis(2_600));
    s.kill(l as usize - 1);
    let p = phone.wait();
    assert!(p.ok(), "parker's phone: {}", p.errors);
    assert!(p.logs.contains("recall_slot=701"), "{}", p.logs);
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    let log = s.log(h);
    // The edge's own account (the registry nodes in the same process log theirs too).
    let expired: String = log
        .lines()
        .filter(|l| l.contains("parked call expired"))
        .collect();
    let late = values(&expired, "late_ms");
    assert_eq!(late.len(), 1, "the deadline fired once:\n{log}");
    // Never early (the state refuses it), late by at most about an election (200-400 ms
    // timeout, plus the heartbeats lost before it).
    assert!(late[0] <= 1_500, "fired {} ms late", late[0]);
    assert_eq!(log.matches("recall ringing").count(), 1, "{log}");
    let new_leader = leader(&s, s.grpc[h]);
    assert!(new_leader > 0 && new_leader != l, "a new leader, not {l}");
}

/// A lamp key at `site` on `resource` (slot or lot), as 2001.
fn lamp(site: &Daemon, resource: &str) -> RunningSipp {
    Sipp::new(site, "uac_lamp.xml")
        .args(["-s", resource, "-au", "2001", "-ap", "pw2001"])
        .key("caller", "2001")
        .spawn()
}

/// The order of the lamp's NOTIFYs: free, the parked call, free again, the final one.
fn assert_lamp_cycle(r: &SippResult) {
    let order: Vec<usize> = ["notify_v0", "notify_v1", "notify_v2", "final="]
        .iter()
        .map(|k| {
            r.logs
                .find(k)
                .unwrap_or_else(|| panic!("lamp: no {k}:\n{}", r.logs))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "lamp out of order");
}

#[test]
fn lamps_at_another_site_follow_a_park_and_its_retrieve() {
    let s = Sites::start(&lot(90, 20));
    let slot = lamp(&s.site[1], "701");
    let whole = lamp(&s.site[1], "700");
    slot.wait_log("notify_v0", Duration::from_secs(10));
    whole.wait_log("notify_v0", Duration::from_secs(10));
    let (alice, _m, _) = park_at_a(&s);
    // Site B's lamps light with the call parked at site A (its dialog as Alice sees it).
    let cid = slot.wait_log("parked_call_id", Duration::from_secs(10));
    assert!(!cid.is_empty());
    assert_eq!(
        whole.wait_log("parked_call_id", Duration::from_secs(10)),
        cid
    );
    // Retrieved at site C: the lamps at B go out.
    let carol = Sipp::new(&s.site[2], "uac_call.xml")
        .args(["-s", "701", "-au", "3001", "-ap", "pw3001", "-d", "300"])
        .key("caller", "3001")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(carol.ok(), "{}", carol.errors);
    for l in [slot, whole] {
        let r = l.wait();
        assert!(r.ok(), "lamp: {}", r.errors);
        assert_lamp_cycle(&r);
    }
    assert!(alice.wait().ok());
}

/// A lamp key at site B on 701, lit by Alice parked at site C; the lamp and Alice's phone.
fn parked_at_c_lamp_at_b(s: &Sites) -> (RunningSipp, (RunningSipp, RtpPeer)) {
    let slot = lamp(&s.site[1], "701");
    slot.wait_log("notify_v0", Duration::from_secs(10));
    let media = RtpPeer::bind();
    let alice = alice(&s.site[2], &media);
    let bob = bob_parks(&s.site[2]);
    assert!(bob.wait().ok());
    slot.wait_log("parked_call_id", Duration::from_secs(10));
    (slot, (alice, media))
}

#[test]
fn a_site_that_dies_loses_its_parked_calls_when_its_lease_lapses() {
    let lease = 3;
    let mut s = Sites::start_with(&lot(90, 20), lease);
    let (slot, _alice) = parked_at_c_lamp_at_b(&s);
    // Site C's process (its edge and registry node) dies: nobody holds Alice's media now.
    let t0 = std::time::Instant::now();
    s.kill(2);
    let r = slot.wait();
    let took = t0.elapsed();
    assert!(r.ok(), "lamp: {}", r.errors);
    assert_lamp_cycle(&r);
    // Not before the lease could have run out, and soon after it.
    assert!(
        took >= Duration::from_secs(lease - 1) && took < Duration::from_secs(lease + 5),
        "slot freed {took:?} after the site died (lease {lease} s)"
    );
    let log = s.log(1);
    assert!(log.contains("lease of site-c lapsed"), "{log}");
    // The slot is free: a retrieve at site B finds nobody, at once.
    let empty = Sipp::new(&s.site[1], "uac_empty_slot.xml")
        .args(["-s", "701", "-au", "2002", "-ap", "pw2002"])
        .key("caller", "2002")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(empty.ok(), "{}", empty.errors);
}

#[test]
fn a_call_to_an_extension_registered_at_another_site_crosses_the_trunk() {
    let s = Sites::start(&lot(90, 20));
    // 2001 is registered at site B; 1001 calls it through site A.
    let bob_media = RtpPeer::bind();
    let bob = s.site[1]
        .phone("2001", "uas_answer.xml", &bob_media)
        .args(["-d", "0"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&s.site[0], "uac_call.xml")
        .args(["-s", "2001", "-au", "1001", "-ap", "pw1001", "-d", "2500"])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    let alice_relay = relay(alice.wait_log("relay_port", Duration::from_secs(10)));
    let bob_relay = relay(bob.wait_log("relay_port", Duration::from_secs(10)));
    assert!((s.site[0].rtp.0..=s.site[0].rtp.1).contains(&alice_relay.port()));
    assert!((s.site[1].rtp.0..=s.site[1].rtp.1).contains(&bob_relay.port()));
    std::thread::sleep(Duration::from_millis(100));
    assert_bridged(
        (&alice_media, alice_relay),
        (&bob_media, bob_relay),
        50,
        Duration::from_millis(400),
    );
    let log = s.log(0);
    assert!(log.contains("trunk=Some(\"site-b\")"), "{log}");
    // Alice hangs up; the BYE crosses the trunk to Bob.
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    let b = bob.wait();
    assert!(b.ok(), "callee: {}", b.errors);
}

#[test]
fn a_site_that_restarts_frees_the_slots_of_the_calls_it_lost_without_waiting_for_its_lease() {
    let mut s = Sites::start(&lot(90, 20)); // leases of 15 s
    let (slot, _alice) = parked_at_c_lamp_at_b(&s);
    // Site C's process dies and comes back (a pod restart): the new edge's first lease names a
    // new incarnation, and the calls the old one held are given up at once.
    let t0 = std::time::Instant::now();
    s.kill(2);
    s.spawn(2);
    let r = slot.wait();
    let took = t0.elapsed();
    assert!(r.ok(), "lamp: {}", r.errors);
    assert_lamp_cycle(&r);
    assert!(
        took < Duration::from_secs(10),
        "slot freed after {took:?} (lease 15 s)"
    );
    assert!(s.log(1).contains("site-c restarted"), "{}", s.log(1));
}

/// openraft's own lines about failed appends are off by default (one per heartbeat); the
/// leader says itself, once, that a member stopped taking the log, and once that it is back.
/// (Killed and started again: a paused member campaigns the moment it wakes, and a new term's
/// leader starts its count afresh.) The member that comes back does not unseat the leader:
/// the leader tries it again within 100 ms, before it would campaign (with a 2 s back-off,
/// its higher term often did, and the new leader had nothing to say of it).
#[test]
fn the_leader_says_once_when_a_member_stops_taking_the_log_and_when_it_is_back() {
    let mut s = Sites::start(&lot(90, 20));
    let l = leader(&s, s.grpc[0]);
    assert!(l > 0, "a leader");
    let leader_proc = l as usize - 1;
    let follower = l as usize % 3;
    let leadership = |s: &Sites| {
        s.log(leader_proc)
            .lines()
            .filter(|l| l.contains("registry leader"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = leadership(&s);
    s.kill(follower);
    s.wait_log(
        leader_proc,
        "a registry member is not taking the log",
        Duration::from_secs(20),
    );
    s.spawn(follower);
    s.wait_log(
        leader_proc,
        "a registry member takes the log again",
        Duration::from_secs(20),
    );
    assert_eq!(leadership(&s), before, "the leader kept its office");
    let log = s.log(leader_proc);
    let member = format!("member={}", follower + 1);
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("taking the log") || l.contains("takes the log"))
        .collect();
    assert_eq!(said.len(), 2, "said once each: {said:#?}");
    assert!(
        said[0].contains(" WARN ") && said[0].contains(&member),
        "{}",
        said[0]
    );
    assert!(
        said[1].contains(" INFO ") && said[1].contains(&member),
        "{}",
        said[1]
    );
}
