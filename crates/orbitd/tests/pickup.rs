//! Call pickup end to end: three `orbitd run` processes (registry voter + edge each) joined by
//! the signed trunk, SIPp phones and real RTP. A desk rings at one site and is picked up at the
//! same site or another, by code or by a lamp key whose Replaces comes from a real NOTIFY; two
//! pickers at two sites race for one call; who is not in the group is refused; lamps at a third
//! site follow calls their extensions make and calls answered at once.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Every desk in one pickup group but 1010 (the lobby phone).
fn tenant() -> String {
    let members: Vec<String> = [1000, 2000, 3000]
        .iter()
        .flat_map(|b| (b + 1..=b + 10).map(|n| format!("\"{n}\"")))
        .filter(|n| n != "\"1010\"")
        .collect();
    format!(
        "[[edge.tenant.pickup_groups]]\nname = \"desks\"\nmembers = [{}]\n",
        members.join(", ")
    )
}

/// `ext` at `site` rings until the CANCEL that says its call was picked up elsewhere.
fn ringing_desk(site: &Daemon, ext: &str) -> RunningSipp {
    let media = RtpPeer::bind();
    site.phone(ext, "uas_ring_picked.xml", &media).spawn()
}

/// 1001 calls `callee` through `site` and waits for whoever answers to hang up.
fn caller(site: &Daemon, callee: &str, media: &RtpPeer) -> RunningSipp {
    Sipp::new(site, "uac_call_wait_bye.xml")
        .args(["-s", callee, "-au", "1001", "-ap", "pw1001"])
        .key("caller", "1001")
        .key("rtpport", &media.port().to_string())
        .spawn()
}

/// `ext` dials `code` at `site`; if it has the call, it hangs up after 2.5 s.
fn picker(site: &Daemon, ext: &str, code: &str, media: &RtpPeer) -> RunningSipp {
    picker_with(site, ext, code, media, "Subject: call pickup")
}

/// As [`picker`], with one more header line in the INVITE.
fn picker_with(site: &Daemon, ext: &str, code: &str, media: &RtpPeer, header: &str) -> RunningSipp {
    Sipp::new(site, "uac_pickup.xml")
        .args([
            "-s",
            code,
            "-au",
            ext,
            "-ap",
            &format!("pw{ext}"),
            "-d",
            "2500",
        ])
        .key("caller", ext)
        .key("rtpport", &media.port().to_string())
        .key("extra_header", header)
        .spawn()
}

/// The caller and the picker, each talking to the relay port its 200 named, hear each other
/// and nobody else (through one relay or two); those relay addresses.
fn assert_connected(
    caller: (&RunningSipp, &RtpPeer),
    picker: (&RunningSipp, &RtpPeer),
) -> (SocketAddr, SocketAddr) {
    let wait = Duration::from_secs(10);
    let a = relay(caller.0.wait_log("relay_port", wait));
    let b = relay(picker.0.wait_log("relay_port", wait));
    std::thread::sleep(Duration::from_millis(100));
    assert_bridged((caller.1, a), (picker.1, b), 50, Duration::from_millis(400));
    (a, b)
}

/// Wait until site `i`'s edge has had a ring of `ext` committed: a pickup of it can be ordered
/// from then on (a call is recorded after ringing half a second).
fn wait_for_ring(s: &Sites, i: usize, ext: &str) {
    let t0 = std::time::Instant::now();
    let want = format!(" of {ext} at ");
    while !s
        .log(i)
        .lines()
        .any(|l| l.contains("committed event=ring ") && l.contains(&want))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no ring of {ext} recorded at site {i}:\n{}",
            s.log(i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const COMPLETED_ELSEWHERE: &str = "cancel_reason=SIP;cause=200;text=\"Call completed elsewhere\"";

#[test]
fn a_desk_ringing_at_site_b_is_picked_up_at_site_c_with_media_through_both_relays() {
    let s = Sites::start(&tenant());
    let desk = ringing_desk(&s.site[1], "2001");
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = caller(&s.site[0], "2001", &alice_media);
    wait_for_ring(&s, 0, "2001");

    let carol_media = RtpPeer::bind();
    let carol = picker(&s.site[2], "3001", "*8", &carol_media);
    // caller ⇄ relay A ⇄ relay C ⇄ picker, both ways.
    let (alice_relay, carol_relay) =
        assert_connected((&alice, &alice_media), (&carol, &carol_media));
    assert!((s.site[0].rtp.0..=s.site[0].rtp.1).contains(&alice_relay.port()));
    assert!(
        (s.site[2].rtp.0..=s.site[2].rtp.1).contains(&carol_relay.port()),
        "Carol talks to site C's relay ({carol_relay})"
    );
    let c = carol.wait();
    assert!(c.ok(), "picker: {}", c.errors);
    assert!(
        c.logs.contains("caller=\"Caller\" <sip:1001@orbit.local>"),
        "the picker is told who called: {}",
        c.logs
    );
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    assert!(
        a.logs.contains("answered_by=<sip:3001@orbit.local>"),
        "the caller is told who answered: {}",
        a.logs
    );
    let d = desk.wait();
    assert!(d.ok(), "ringing desk: {}", d.errors);
    assert!(d.logs.contains(COMPLETED_ELSEWHERE), "{}", d.logs);
    assert!(
        s.log(2).contains("picking up over the trunk"),
        "{}",
        s.log(2)
    );
    assert!(s.log(0).contains("call picked up"), "{}", s.log(0));
}

#[test]
fn two_pickers_at_two_sites_racing_for_one_ringing_call_get_exactly_one_200() {
    let s = Sites::start(&tenant());
    let desk = ringing_desk(&s.site[0], "1002");
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = caller(&s.site[0], "1002", &alice_media);
    wait_for_ring(&s, 0, "1002");

    // Both dial at once.
    let (b_media, c_media) = (RtpPeer::bind(), RtpPeer::bind());
    let b = picker(&s.site[1], "2001", "*81002", &b_media);
    let c = picker(&s.site[2], "3001", "**1002", &c_media);
    // The winner's media, both ways through its relay and site A's.
    let won = |r: &RunningSipp| r.logs().contains("outcome=won");
    let t0 = std::time::Instant::now();
    while !won(&b) && !won(&c) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (winner, winner_media) = if won(&b) {
        (&b, &b_media)
    } else {
        (&c, &c_media)
    };
    assert_connected((&alice, &alice_media), (winner, winner_media));
    let b = b.wait();
    let c = c.wait();
    assert!(b.ok(), "site B picker: {}", b.errors);
    assert!(c.ok(), "site C picker: {}", c.errors);
    let results = [&b, &c];
    let won = results
        .iter()
        .filter(|r| r.logs.contains("outcome=won"))
        .count();
    let lost = results
        .iter()
        .filter(|r| {
            r.logs
                .contains("outcome=refused status=404 Nothing To Pick Up")
        })
        .count();
    assert_eq!((won, lost), (1, 1), "B: {}\nC: {}", b.logs, c.logs);
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    let d = desk.wait();
    assert!(d.ok(), "ringing desk: {}", d.errors);
    assert!(d.logs.contains(COMPLETED_ELSEWHERE), "{}", d.logs);
}

#[test]
fn at_one_site_who_is_not_in_the_group_is_refused_and_directed_pickup_takes_the_named_desk() {
    let s = Sites::start(&tenant());
    let site = &s.site[0];
    let desk = ringing_desk(site, "1002");
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = caller(site, "1002", &alice_media);
    wait_for_ring(&s, 0, "1002");

    for (ext, code, status) in [
        ("1010", "*8", "403 Not In A Pickup Group"),
        ("1010", "*81002", "403 Not In Your Pickup Group"),
        ("1003", "*81005", "404 Nothing To Pick Up"),
        ("1003", "*89999", "404 No Such Extension"),
    ] {
        let media = RtpPeer::bind();
        let r = picker(site, ext, code, &media).wait();
        assert!(r.ok(), "{ext} dialling {code}: {}", r.errors);
        assert!(
            r.logs.contains(&format!("outcome=refused status={status}")),
            "{ext} dialling {code}: {}",
            r.logs
        );
    }

    let carol_media = RtpPeer::bind();
    let carol = picker(site, "1003", "*81002", &carol_media);
    assert_connected((&alice, &alice_media), (&carol, &carol_media));
    let c = carol.wait();
    assert!(c.ok(), "picker: {}", c.errors);
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    let d = desk.wait();
    assert!(d.logs.contains(COMPLETED_ELSEWHERE), "{}", d.logs);
}

#[test]
fn a_lamp_key_at_site_c_flashes_with_a_desk_ringing_at_site_a_and_picks_the_call_up_with_replaces()
{
    let s = Sites::start(&tenant());
    let lamp = Sipp::new(&s.site[2], "uac_lamp_ext.xml")
        .args(["-s", "1002", "-au", "3001", "-ap", "pw3001"])
        .key("caller", "3001")
        .spawn();
    lamp.wait_log("lamp_idle", Duration::from_secs(10));
    let desk = ringing_desk(&s.site[0], "1002");
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = caller(&s.site[0], "1002", &alice_media);
    // The lamp at site C shows the call ringing at site A, with what names it.
    let wait = Duration::from_secs(10);
    let call_id = lamp.wait_log("early_call_id", wait);
    let local = lamp.wait_log("early_local_tag", wait);
    let remote = lamp.wait_log("early_remote_tag", wait);
    let replaces = format!("Replaces: {call_id};to-tag={local};from-tag={remote};early-only");

    let carol_media = RtpPeer::bind();
    let carol = picker_with(&s.site[2], "3001", "1002", &carol_media, &replaces);
    assert_connected((&alice, &alice_media), (&carol, &carol_media));
    let c = carol.wait();
    assert!(c.ok(), "lamp key picker: {}", c.errors);
    assert!(c.logs.contains("outcome=won"), "{}", c.logs);
    let l = lamp.wait();
    assert!(l.ok(), "lamp: {}", l.errors);
    assert!(l.logs.contains("lamp_dark="), "{}", l.logs);
    assert!(alice.wait().ok());
    let d = desk.wait();
    assert!(d.logs.contains(COMPLETED_ELSEWHERE), "{}", d.logs);
}

#[test]
fn a_recall_ringing_the_parker_at_site_a_is_picked_up_at_site_c() {
    let lot = "[[edge.tenant.lots]]\npark_ext = \"700\"\nslots = \"701-720\"\nparking_secs = 4\nrecall_ring_secs = 20\n";
    let s = Sites::start(&format!("{}{lot}", tenant()));
    // 1002 parks Alice (1001) at site A; its desk rings when the recall comes.
    let alice_media = RtpPeer::bind();
    let alice = s.site[0]
        .phone("1001", "uas_answer.xml", &alice_media)
        .args(["-d", "0"])
        .spawn();
    let bob = Sipp::new(&s.site[0], "uac_park.xml")
        .args(["-s", "1001", "-au", "1002", "-ap", "pw1002", "-d", "300"])
        .key("caller", "1002")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .key("park_to", "700")
        .key("refer_params", "")
        .spawn();
    alice.wait_log("relay_port", Duration::from_secs(10));
    assert!(bob.wait().ok(), "parker");
    // Registered after the park (whose "Parked on 701" MESSAGE it does not expect).
    let desk = ringing_desk(&s.site[0], "1002");
    // Parked 4 s, then the recall rings 1002's desk (recorded at once); 3001 at site C picks
    // it up.
    wait_for_ring(&s, 0, "1002");
    let carol_media = RtpPeer::bind();
    let carol = picker(&s.site[2], "3001", "*8", &carol_media);
    assert_connected((&alice, &alice_media), (&carol, &carol_media));
    let c = carol.wait();
    assert!(c.ok(), "picker: {}", c.errors);
    assert!(c.logs.contains("caller=\"701: "), "{}", c.logs);
    let d = desk.wait();
    assert!(d.ok(), "the parker's desk: {}", d.errors);
    assert!(d.logs.contains(COMPLETED_ELSEWHERE), "{}", d.logs);
    assert!(alice.wait().ok());
    assert!(s.log(0).contains("recall ringing"), "{}", s.log(0));
}

#[test]
fn a_lamp_at_a_third_site_follows_a_call_early_then_confirmed_then_terminated() {
    let s = Sites::start(&tenant());
    let lamp = lamp_following(&s.site[2], "2001", "3001");
    lamp.wait_log("lamp_idle", Duration::from_secs(10));
    // 2001 at site B rings 1.5 s, then answers; 1001 calls it from site A and hangs up.
    let bob_media = RtpPeer::bind();
    let bob = s.site[1]
        .phone("2001", "uas_ring_answer.xml", &bob_media)
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&s.site[0], "uac_call.xml")
        .args(["-s", "2001", "-au", "1001", "-ap", "pw1001", "-d", "1000"])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    assert!(bob.wait().ok());
    assert_followed(lamp, "recipient");
}

/// A lamp at `site` of `ext`, watched by `by`, following one call to its end.
fn lamp_following(site: &Daemon, ext: &str, by: &str) -> RunningSipp {
    Sipp::new(site, "uac_lamp_ext_answered.xml")
        .args(["-s", ext, "-au", by, "-ap", &format!("pw{by}")])
        .key("caller", by)
        .spawn()
}

/// The lamp showed one call early in `direction`, then confirmed, then over, in that order.
fn assert_followed(lamp: RunningSipp, direction: &str) {
    let l = lamp.wait();
    assert!(l.ok(), "lamp: {}", l.errors);
    assert!(
        l.logs.contains(&format!("early_direction={direction} ")),
        "{}",
        l.logs
    );
    let order: Vec<usize> = ["early_call_id=", "lamp_confirmed=", "lamp_dark=", "final="]
        .iter()
        .map(|k| {
            l.logs
                .find(k)
                .unwrap_or_else(|| panic!("lamp: no {k}:\n{}", l.logs))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "lamp out of order:\n{}",
        l.logs
    );
}

#[test]
fn lamps_at_a_third_site_show_a_call_their_extension_makes_and_one_answered_at_once() {
    let s = Sites::start(&tenant());
    // At site C, 3001 watches 1001 (site A) and 3002 watches 2001 (site B).
    let caller_lamp = lamp_following(&s.site[2], "1001", "3001");
    let callee_lamp = lamp_following(&s.site[2], "2001", "3002");
    caller_lamp.wait_log("lamp_idle", Duration::from_secs(10));
    callee_lamp.wait_log("lamp_idle", Duration::from_secs(10));
    // Site A, where the call begins, knows both are watched.
    let wait = Duration::from_secs(10);
    s.wait_log(0, "lamp of 1001 watched at site-c", wait);
    s.wait_log(0, "lamp of 2001 watched at site-c", wait);
    // 2001 at site B answers at once; 1001 calls it from site A and hangs up after a second.
    let bob_media = RtpPeer::bind();
    let bob = s.site[1]
        .phone("2001", "uas_answer.xml", &bob_media)
        .spawn();
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&s.site[0], "uac_call.xml")
        .args(["-s", "2001", "-au", "1001", "-ap", "pw1001", "-d", "1000"])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    assert!(bob.wait().ok());
    assert_followed(caller_lamp, "initiator");
    assert_followed(callee_lamp, "recipient");
}

#[test]
fn an_operator_puts_the_lobby_phone_in_a_group_through_orbitctl_and_site_c_picks_its_call_up() {
    let s = Sites::start(&tenant());
    let (admin, reader) = (s.admin_tls.clone(), s.reader_tls("viewer"));
    let ctl = |node: usize, tls: &[String], args: &[&str]| orbitctl_at(s.grpc[node], tls, args);
    let t = ["--tenant", "orbit.local"];
    // The config's group, seeded by the edges, as every node shows it.
    let (code, out, err) = ctl(
        2,
        &reader,
        &["pickup", "get", t[0], t[1], "desks", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"3001\"") && !out.contains("\"1010\""),
        "{out}"
    );
    let set = |members: &str, name: &str| -> Vec<String> {
        ["pickup", "set", t[0], t[1], name, "--members", members]
            .map(String::from)
            .into()
    };
    // Wrong input is named; a reader may not change groups; nothing of that name is not found.
    let bad_member = set("1010,9999", "lobby");
    let bad_name = set("1010", "lobby desk");
    let unknown: Vec<String> = ["pickup", "delete", t[0], t[1], "nope"]
        .map(String::from)
        .into();
    for (tls, args, want, says) in [
        (&admin, &bad_member, 5, "members: no extension 9999"),
        (&admin, &bad_name, 5, "group.name"),
        (&reader, &set("1010,3001", "lobby"), 4, ""),
        (&admin, &unknown, 5, "no pickup group nope"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = ctl(1, tls, &args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(says), "{err} lacks {says}");
    }
    // Before: 3001 at site C may not take the lobby phone's calls.
    let refused = picker(&s.site[2], "3001", "*81010", &RtpPeer::bind()).wait();
    assert!(
        refused
            .logs
            .contains("outcome=refused status=403 Not In Your Pickup Group"),
        "{}",
        refused.logs
    );
    let lobby = set("1010,3001", "lobby");
    let lobby: Vec<&str> = lobby.iter().map(String::as_str).collect();
    let (code, _, err) = ctl(1, &admin, &lobby);
    assert_eq!(code, 0, "{err}");
    for i in [0, 2] {
        s.wait_log(i, "groups=desks,lobby", Duration::from_secs(5));
    }
    // The lobby phone rings at site A (recorded now that a group holds it); 3001 at site C
    // picks its call up with *8.
    let desk = ringing_desk(&s.site[0], "1010");
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = caller(&s.site[0], "1010", &alice_media);
    wait_for_ring(&s, 0, "1010");
    let carol_media = RtpPeer::bind();
    let carol = picker(&s.site[2], "3001", "*8", &carol_media);
    assert_connected((&alice, &alice_media), (&carol, &carol_media));
    assert!(carol.wait().ok());
    assert!(alice.wait().ok());
    assert!(desk.wait().logs.contains(COMPLETED_ELSEWHERE));
    // Deleted, it is gone everywhere.
    let del = ["pickup", "delete", t[0], t[1], "lobby"];
    let (code, _, err) = ctl(2, &admin, &del);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(0, &reader, &["pickup", "list", "--json"]);
    assert!(!out.contains("lobby") && out.contains("desks"), "{out}");
    // Site C's edge logged its groups at start, and logs them again once it has the deletion.
    let t0 = std::time::Instant::now();
    while s.log(2).matches("groups=desks\n").count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", s.log(2));
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = picker(&s.site[2], "3001", "*81010", &RtpPeer::bind()).wait();
    assert!(
        refused
            .logs
            .contains("outcome=refused status=403 Not In Your Pickup Group"),
        "site C follows the deletion: {}",
        refused.logs
    );
}
