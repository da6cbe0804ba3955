//! Call park end to end: the real daemon, SIPp phones, real RTP. Alice (1001) is called by Bob
//! (1002), who parks her; Carol (1003) retrieves her, or the recall rings Bob's phone back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use orbit_media::audio::{rms, Codec};

/// Alice's phone: registered as 1001, answers with media on `media`.
fn alice(d: &Daemon, media: &RtpPeer, scenario: &str, hold_ms: &str) -> RunningSipp {
    d.phone("1001", scenario, media)
        .args(["-d", hold_ms])
        .spawn()
}

/// Bob calls Alice from an unregistered port and, after `talk_ms`, transfers her to `park_to`.
fn bob_parks(d: &Daemon, park_to: &str, talk_ms: &str) -> RunningSipp {
    bob_parks_with(d, park_to, "", talk_ms)
}

/// The same, with `refer_params` after the Refer-To host (`?Replaces=...`).
fn bob_parks_with(d: &Daemon, park_to: &str, refer_params: &str, talk_ms: &str) -> RunningSipp {
    let media = RtpPeer::bind();
    Sipp::new(d, "uac_park.xml")
        .args(["-s", "1001", "-au", "1002", "-ap", "pw1002", "-d", talk_ms])
        .key("caller", "1002")
        .key("rtpport", &media.port().to_string())
        .key("park_to", park_to)
        .key("refer_params", refer_params)
        .spawn()
}

/// Bob's desk phone, registered as 1002: takes the "Parked on" MESSAGE and, with `calls` 2,
/// the recall too.
fn bob_phone(d: &Daemon, scenario: &str, calls: u32, media: &RtpPeer) -> RunningSipp {
    d.phone("1002", scenario, media)
        .args(["-m", &calls.to_string(), "-d", "1500"])
        .spawn()
}

fn lots(parking: u64, ring: u64, fallback: Option<&str>) -> String {
    format!(
        "[[edge.tenant.lots]]\npark_ext = \"700\"\nslots = \"701-720\"\nparking_secs = {parking}\nrecall_ring_secs = {ring}\n{}",
        fallback.map(|f| format!("fallback = \"{f}\"\n")).unwrap_or_default()
    )
}

/// RTP header fields: (marker, payload type, seq, timestamp, ssrc).
fn header(p: &[u8]) -> (bool, u8, u16, u32, u32) {
    (
        p[1] & 0x80 != 0,
        p[1] & 0x7f,
        u16::from_be_bytes([p[2], p[3]]),
        u32::from_be_bytes(p[4..8].try_into().unwrap()),
        u32::from_be_bytes(p[8..12].try_into().unwrap()),
    )
}

#[test]
fn blind_park_plays_music_then_retrieve_bridges_rtp() {
    let d = Daemon::start();
    let alice_media = RtpPeer::bind();
    let alice = alice(&d, &alice_media, "uas_answer.xml", "0");
    let phone_media = RtpPeer::bind();
    let phone = bob_phone(&d, "uas_recall_answer.xml", 1, &phone_media);
    let bob = bob_parks(&d, "700", "500");
    let alice_relay = relay(alice.wait_log("relay_port", Duration::from_secs(10)));
    let b = bob.wait();
    assert!(b.ok(), "parker: {}", b.errors);
    assert!(b.logs.contains("sipfrag=200"), "{}", b.logs);
    let p = phone.wait();
    assert!(p.ok(), "parker's phone: {}", p.errors);
    assert!(p.logs.contains("parked_on=701"), "{}", p.logs);

    // Parked: Alice hears music, from the relay port she already talks to, at 50 packets/s.
    alice_media.drain();
    let got = alice_media.listen(Duration::from_secs(3));
    let rate = got.len() as f64 / 3.0;
    assert!((47.5..=52.5).contains(&rate), "music at {rate} packets/s");
    assert!(got.iter().all(|(_, from, _)| *from == alice_relay));
    let hs: Vec<_> = got.iter().map(|(_, _, p)| header(p)).collect();
    for w in hs.windows(2) {
        assert_eq!(w[1].4, w[0].4, "one SSRC");
        assert_eq!(
            w[1].2,
            w[0].2.wrapping_add(1),
            "consecutive sequence numbers"
        );
        assert_eq!(w[1].3, w[0].3.wrapping_add(160), "20 ms timestamps");
    }
    assert!(hs.iter().all(|h| h.1 == 0), "PCMU, as negotiated");
    let level: f64 = got
        .iter()
        .map(|(_, _, p)| rms(Codec::Pcmu, &p[12..]))
        .sum::<f64>()
        / got.len() as f64;
    assert!(level > 500.0, "music is sound, not silence: rms {level}");

    // Carol dials 701: bridged to Alice, RTP both ways through the relay, music gone.
    let carol_media = RtpPeer::bind();
    let carol = Sipp::new(&d, "uac_call.xml")
        .args(["-s", "701", "-au", "1003", "-ap", "pw1003", "-d", "2500"])
        .key("caller", "1003")
        .key("rtpport", &carol_media.port().to_string())
        .spawn();
    let carol_relay = relay(carol.wait_log("relay_port", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(100));
    assert_bridged(
        (&alice_media, alice_relay),
        (&carol_media, carol_relay),
        50,
        Duration::from_millis(300),
    );
    let c = carol.wait();
    assert!(c.ok(), "retriever: {}", c.errors);
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    let log = d.log();
    assert!(log.contains("parked") && log.contains("retrieved"), "{log}");
}

#[test]
fn empty_slot_refused_and_hang_up_while_parked_frees_the_slot() {
    let d = Daemon::start();
    let empty = Sipp::new(&d, "uac_empty_slot.xml")
        .args(["-s", "705", "-au", "1003", "-ap", "pw1003"])
        .key("rtpport", "4000")
        .key("caller", "1003")
        .run();
    assert!(empty.ok(), "{}", empty.errors);
    // Alice hangs up 1.5 s after answering; Bob parks her after 0.3 s.
    let alice_media = RtpPeer::bind();
    let alice = alice(&d, &alice_media, "uas_answer_bye.xml", "1500");
    let phone = bob_phone(&d, "uas_recall_answer.xml", 1, &RtpPeer::bind());
    let bob = bob_parks(&d, "705", "300");
    assert!(bob.wait().ok());
    assert!(phone.wait().logs.contains("parked_on=705"));
    let a = alice.wait();
    assert!(a.ok(), "parked caller hanging up: {}", a.errors);
    // The slot is free at once: retrieving it finds nobody.
    let again = Sipp::new(&d, "uac_empty_slot.xml")
        .args(["-s", "705", "-au", "1003", "-ap", "pw1003"])
        .key("rtpport", "4000")
        .key("caller", "1003")
        .run();
    assert!(
        again.ok(),
        "slot still taken after hang-up: {}",
        again.errors
    );
    assert!(d.log().contains("parked caller hung up"));
}

#[test]
fn recall_rings_the_parker_who_answers_and_talks_to_the_caller() {
    let d = Daemon::start_with(Options {
        tenant: lots(2, 5, None),
        ..Options::default()
    });
    let alice_media = RtpPeer::bind();
    let alice = alice(&d, &alice_media, "uas_answer.xml", "0");
    let phone_media = RtpPeer::bind();
    let phone = bob_phone(&d, "uas_recall_answer.xml", 2, &phone_media);
    let bob = bob_parks(&d, "700", "300");
    let alice_relay = relay(alice.wait_log("relay_port", Duration::from_secs(10)));
    assert!(bob.wait().ok());
    let parked_at = Instant::now();
    let phone_relay = relay(phone.wait_log("relay_port", Duration::from_secs(10)));
    let after = parked_at.elapsed();
    // The deadline is 2 s after the park; the parker's scenario finished just after it.
    assert!(
        after > Duration::from_millis(1500) && after < Duration::from_millis(3500),
        "recall after {after:?}"
    );
    // The phone logs the relay port on the INVITE; give its 200 and our ACK a moment (until
    // then Alice still hears music and the phone's packets are not for her).
    std::thread::sleep(Duration::from_millis(300));
    alice_media.drain();
    let linger = Duration::from_millis(200);
    let (a, p) = std::thread::scope(|s| {
        let a = s.spawn(|| alice_media.exchange(alice_relay, 25, 0xA, linger));
        let p = s.spawn(|| phone_media.exchange(phone_relay, 25, 0xB, linger));
        (a.join().unwrap(), p.join().unwrap())
    });
    assert_eq!(
        a.ssrcs.iter().copied().collect::<Vec<_>>(),
        vec![0xB],
        "{a:?}"
    );
    assert_eq!(a.packets, 25);
    assert_eq!(p.packets, 25, "{p:?}");
    let r = phone.wait();
    assert!(r.ok(), "parker's phone: {}", r.errors);
    assert!(r.logs.contains("recall_slot=701"), "{}", r.logs);
    assert!(alice.wait().ok());
    assert_eq!(
        d.log().matches("recall ringing").count(),
        1,
        "recalled once"
    );
}

#[test]
fn unanswered_recall_goes_to_the_fallback() {
    let d = Daemon::start_with(Options {
        tenant: lots(1, 2, Some("1004")),
        ..Options::default()
    });
    let alice_media = RtpPeer::bind();
    let alice = alice(&d, &alice_media, "uas_answer.xml", "0");
    let phone = bob_phone(&d, "uas_recall_ring.xml", 2, &RtpPeer::bind());
    let fallback_media = RtpPeer::bind();
    let fallback = d
        .phone("1004", "uas_recall_answer.xml", &fallback_media)
        .args(["-d", "1000"])
        .spawn();
    let bob = bob_parks(&d, "700", "300");
    assert!(bob.wait().ok());
    let p = phone.wait();
    assert!(
        p.ok(),
        "parker's phone rang and was cancelled: {}",
        p.errors
    );
    assert!(p.logs.contains("recall_slot=701"), "{}", p.logs);
    let f = fallback.wait();
    assert!(f.ok(), "fallback answered: {}", f.errors);
    assert!(f.logs.contains("recall_slot=701"), "{}", f.logs);
    assert!(
        alice.wait().ok(),
        "Alice was bridged to the fallback, who hung up"
    );
    let log = d.log();
    assert!(
        log.contains("recall unanswered") && log.contains("Fallback"),
        "{log}"
    );
}

#[test]
fn lamp_keys_light_for_a_parked_call_in_order() {
    let d = Daemon::start();
    let lamp = |resource: &str| {
        Sipp::new(&d, "uac_lamp.xml")
            .args(["-s", resource, "-au", "1003", "-ap", "pw1003"])
            .key("caller", "1003")
            .spawn()
    };
    let slot = lamp("701");
    let lot = lamp("700");
    slot.wait_log("notify_v0", Duration::from_secs(10));
    lot.wait_log("notify_v0", Duration::from_secs(10));
    let alice_media = RtpPeer::bind();
    let alice = alice(&d, &alice_media, "uas_answer.xml", "0");
    let phone = bob_phone(&d, "uas_recall_answer.xml", 1, &RtpPeer::bind());
    let bob = bob_parks(&d, "700", "300");
    assert!(bob.wait().ok());
    assert!(phone.wait().ok());
    let cid = slot.wait_log("parked_call_id", Duration::from_secs(10));
    assert!(!cid.is_empty());
    assert_eq!(lot.wait_log("parked_call_id", Duration::from_secs(10)), cid);
    // Retrieved: both lamps go out (version 2), then they un-subscribe.
    let carol = Sipp::new(&d, "uac_call.xml")
        .args(["-s", "701", "-au", "1003", "-ap", "pw1003", "-d", "300"])
        .key("caller", "1003")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(carol.ok(), "{}", carol.errors);
    for (name, l) in [("slot", slot), ("lot", lot)] {
        let r = l.wait();
        assert!(r.ok(), "{name} lamp: {}", r.errors);
        let order: Vec<usize> = ["notify_v0", "notify_v1", "notify_v2", "final="]
            .iter()
            .map(|k| r.logs.find(k).unwrap_or_else(|| panic!("{name}: no {k}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{name} out of order");
    }
    assert!(alice.wait().ok());
}

#[test]
fn one_touch_park_by_rtp_digits_then_retrieve() {
    let d = Daemon::start();
    // Bob (1002) answers Alice's call and will be parked; he waits for the retriever's BYE.
    let bob_media = RtpPeer::bind();
    let bob = d.phone("1002", "uas_answer.xml", &bob_media).spawn();
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&d, "uac_call_wait_bye.xml")
        .args(["-s", "1002", "-au", "1001", "-ap", "pw1001"])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    let alice_relay = relay(alice.wait_log("relay_port", Duration::from_secs(10)));
    let bob_relay = relay(bob.wait_log("relay_port", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(200));
    // Alice keys *68 in the media stream.
    alice_media.press(alice_relay, "*68");
    // She hears the slot spoken (a prompt of a second or more), then her leg is hung up.
    let got = alice_media.listen(Duration::from_millis(1500));
    let prompt: Vec<_> = got.iter().filter(|(_, _, p)| p.len() == 172).collect();
    assert!(prompt.len() >= 60, "prompt packets: {}", prompt.len());
    let loud = prompt
        .iter()
        .filter(|(_, _, p)| rms(Codec::Pcmu, &p[12..]) > 300.0)
        .count();
    assert!(loud > prompt.len() / 4, "the prompt is speech, not silence");
    let a = alice.wait();
    assert!(a.ok(), "presser's leg ended by BYE: {}", a.errors);
    // Bob is parked in 701 and hears music, from his own relay port.
    bob_media.drain();
    let music = bob_media.listen(Duration::from_secs(1));
    assert!(music.len() >= 45, "music packets: {}", music.len());
    assert!(music.iter().all(|(_, from, _)| *from == bob_relay));
    // Carol takes him back.
    let carol = Sipp::new(&d, "uac_call.xml")
        .args(["-s", "701", "-au", "1003", "-ap", "pw1003", "-d", "500"])
        .key("caller", "1003")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(carol.ok(), "retrieve: {}", carol.errors);
    assert!(bob.wait().ok());
    assert!(d.log().contains("one-touch park"));
}

#[test]
fn attended_park_hears_the_slot_and_replaces_parks_the_caller_there() {
    let d = Daemon::start();
    // Bob first calls 700 and hears which slot his call will go to.
    let consult_media = RtpPeer::bind();
    let consult = Sipp::new(&d, "uac_consult.xml")
        .args(["-s", "700", "-au", "1002", "-ap", "pw1002"])
        .key("caller", "1002")
        .key("rtpport", &consult_media.port().to_string())
        .spawn();
    let cid = consult.wait_log("consult_call_id", Duration::from_secs(10));
    let to_tag = consult.wait_log("consult_to_tag", Duration::from_secs(10));
    let from_tag = consult.wait_log("consult_from_tag", Duration::from_secs(10));
    let prompt = consult_media.listen(Duration::from_millis(2000));
    assert!(prompt.len() >= 80, "slot prompt packets: {}", prompt.len());
    let loud = prompt
        .iter()
        .filter(|(_, _, p)| rms(Codec::Pcmu, &p[12..]) > 300.0)
        .count();
    assert!(loud > prompt.len() / 4, "the slot is spoken");
    // Then he calls Alice and transfers her with Replaces naming the call to 700.
    let alice_media = RtpPeer::bind();
    let alice = alice(&d, &alice_media, "uas_answer.xml", "0");
    let phone = bob_phone(&d, "uas_recall_answer.xml", 1, &RtpPeer::bind());
    let replaces = format!(
        "?Replaces={}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}",
        cid.replace('@', "%40")
    );
    let bob = bob_parks_with(&d, "700", &replaces, "300");
    let b = bob.wait();
    assert!(b.ok(), "transfer: {}", b.errors);
    assert!(b.logs.contains("sipfrag=200"), "{}", b.logs);
    let c = consult.wait();
    assert!(c.ok(), "the edge ends the call to 700: {}", c.errors);
    assert!(phone.wait().logs.contains("parked_on=701"));
    // Alice is in 701: Carol gets her.
    let carol = Sipp::new(&d, "uac_call.xml")
        .args(["-s", "701", "-au", "1003", "-ap", "pw1003", "-d", "300"])
        .key("caller", "1003")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(carol.ok(), "retrieve 701: {}", carol.errors);
    assert!(alice.wait().ok());
}
