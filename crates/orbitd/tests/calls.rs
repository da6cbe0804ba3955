//! End to end: the real daemon, driven by SIPp over loopback, with real RTP through the relay.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn register_with_digest_right_and_wrong_password() {
    let d = Daemon::start();
    let ok = Sipp::new(&d, "register.xml")
        .args(["-s", "1001", "-au", "1001", "-ap", "pw1001"])
        .key("expires", "3600")
        .run();
    assert!(ok.ok(), "{}", ok.errors);
    let bad = Sipp::new(&d, "register_denied.xml")
        .args(["-s", "1001", "-au", "1001", "-ap", "wrong"])
        .key("expires", "3600")
        .run();
    assert!(bad.ok(), "wrong password must get 403: {}", bad.errors);
    // Another user's credentials for 1001's AOR are refused too.
    let other = Sipp::new(&d, "register_denied.xml")
        .args(["-s", "1001", "-au", "1002", "-ap", "pw1002"])
        .key("expires", "3600")
        .run();
    assert!(other.ok(), "{}", other.errors);
}

#[test]
fn stale_nonce_is_rechallenged_with_stale_true() {
    let d = Daemon::start_with(Options {
        nonce_ttl: 1,
        ..Options::default()
    });
    let r = Sipp::new(&d, "register_stale.xml")
        .args(["-s", "1003", "-au", "1003", "-ap", "pw1003"])
        .key("expires", "3600")
        .run();
    assert!(r.ok(), "{}", r.errors);
    assert!(r.logs.contains("stale=true"), "{}", r.logs);
}

#[test]
fn call_relays_rtp_both_ways_and_caller_hangs_up() {
    let d = Daemon::start();
    let c = relayed_call(&d, &["-d", "3000"], 50);
    assert_ne!(c.caller_relay, c.callee_relay);
    assert!((d.rtp.0..=d.rtp.1).contains(&c.caller_relay.port()));
    assert!((d.rtp.0..=d.rtp.1).contains(&c.callee_relay.port()));
    // Every packet arrives, from the relay's port (not the other phone), unmodified.
    let (a, b) = (&c.caller_got, &c.callee_got);
    assert_eq!(a.packets, 50, "caller received {a:?}");
    assert_eq!(b.packets, 50, "callee received {b:?}");
    assert_eq!(
        a.from.iter().copied().collect::<Vec<_>>(),
        vec![c.caller_relay]
    );
    assert_eq!(
        b.from.iter().copied().collect::<Vec<_>>(),
        vec![c.callee_relay]
    );
    assert!(a.ssrcs.contains(&0xB) && b.ssrcs.contains(&0xA));
    assert!(c.uac.ok(), "caller: {}", c.uac.errors);
    assert!(c.uas.ok(), "callee: {}", c.uas.errors);
    wait_ports_free(&d);
}

/// 1001 calls 1002 with SIPp on both ends; both scenarios must complete.
fn two_party(uas_scenario: &str, uas_args: &[&str], uac_scenario: &str) {
    let d = Daemon::start();
    let callee_port = free_port();
    d.register("1002", callee_port);
    let uas = Sipp::new(&d, uas_scenario)
        .key("rtpport", "4000")
        .args(uas_args)
        .port(callee_port)
        .spawn();
    let uac = Sipp::new(&d, uac_scenario)
        .args(["-s", "1002", "-au", "1001", "-ap", "pw1001"])
        .key("caller", "1001")
        .key("rtpport", "4002")
        .run();
    let uas = uas.wait();
    assert!(uac.ok(), "caller: {}", uac.errors);
    assert!(uas.ok(), "callee: {}", uas.errors);
    wait_ports_free(&d);
}

#[test]
fn callee_hangs_up() {
    two_party(
        "uas_answer_bye.xml",
        &["-d", "500"],
        "uac_call_wait_bye.xml",
    );
}

#[test]
fn cancel_before_answer() {
    two_party("uas_ring.xml", &[], "uac_cancel.xml");
}

#[test]
fn busy_callee_is_mapped_through() {
    two_party("uas_busy.xml", &[], "uac_busy.xml");
}

#[test]
fn fifty_concurrent_calls_then_every_port_free() {
    // Fifty calls of one user: more than a phone's default share (calls_per_user).
    let d = Daemon::start_with(Options {
        extra: "[edge.limits]\ncalls_per_user = 64\n".into(),
        ..Options::default()
    });
    let callee_port = free_port();
    d.register("1002", callee_port);
    let uas = Sipp::new(&d, "uas_answer.xml")
        .key("rtpport", "4000")
        .args(["-m", "50"])
        .port(callee_port)
        .spawn();
    // 50 calls started within about a second, each held 5 s: all 50 are up at once.
    let uac = Sipp::new(&d, "uac_call.xml")
        .args(["-s", "1002", "-au", "1001", "-ap", "pw1001", "-d", "5000"])
        .args(["-m", "50", "-r", "50", "-l", "50"])
        .key("caller", "1001")
        .key("rtpport", "4002")
        .spawn();
    // While they are up, 100 port pairs (two endpoints per call) are held.
    std::thread::sleep(Duration::from_millis(2500));
    let held = d.rtp_ports_held().len();
    assert_eq!(held, 200, "50 calls hold 4 ports each");
    let uac = uac.wait();
    let uas = uas.wait();
    assert!(uac.ok(), "caller: {}", uac.errors);
    assert!(uas.ok(), "callee: {}", uas.errors);
    wait_ports_free(&d);
}

#[test]
fn ctrl_c_drains_then_ends_the_calls_left_with_bye_and_frees_ports() {
    let mut d = Daemon::start();
    let callee_port = free_port();
    d.register("1002", callee_port);
    let uas = Sipp::new(&d, "uas_answer.xml")
        .key("rtpport", "4000")
        .port(callee_port)
        .spawn();
    let uac = Sipp::new(&d, "uac_call_wait_bye.xml")
        .args(["-s", "1002", "-au", "1001", "-ap", "pw1001"])
        .key("caller", "1001")
        .key("rtpport", "4002")
        .spawn();
    uac.wait_log("relay_port", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    // A drain of 1 s (the harness's `drain_secs`): the call is still up when it ends.
    let st = d.interrupt();
    assert!(st.success(), "orbitd exit status {st:?}");
    assert!(
        d.log().contains("drain deadline: ending the calls left"),
        "{}",
        d.log()
    );
    let (uac, uas) = (uac.wait(), uas.wait());
    assert!(uac.ok(), "caller got BYE: {}", uac.errors);
    assert!(uas.ok(), "callee got BYE: {}", uas.errors);
    assert!(d.rtp_ports_held().is_empty());
}

#[test]
fn register_with_sha256_digest() {
    use orbit_edge::auth;
    let d = Daemon::start_with(Options {
        algorithms: r#"["SHA-256", "MD5"]"#,
        ..Options::default()
    });
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap();
    let reg = |cseq: u32, auth: &str| {
        format!("REGISTER sip:orbit.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsha{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:1004@orbit.local>;tag=s\r\nTo: <sip:1004@orbit.local>\r\nCall-ID: sha-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:1004@{me}>\r\n{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n")
    };
    let mut buf = [0u8; 4096];
    sock.send_to(reg(1, "").as_bytes(), d.sip).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    let ch = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(ch.starts_with("SIP/2.0 401"), "{ch}");
    // RFC 8760: SHA-256 offered first, MD5 second, with the same nonce.
    let first = ch.find("algorithm=SHA-256").expect("SHA-256 challenge");
    assert!(first < ch.find("algorithm=MD5").expect("MD5 challenge"));
    // Answer the first (SHA-256) challenge, as an RFC 8760 client would.
    let sha = ch
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("SHA-256"))
        .unwrap()
        .trim_start_matches("WWW-Authenticate:");
    let creds = auth::Credentials {
        user: "1004",
        password: "pw1004",
        method: "REGISTER",
        uri: "sip:orbit.local",
        nc: 1,
        cnonce: "0a4f113b",
    };
    let value = auth::answer(sha, &creds).unwrap();
    assert!(value.contains("algorithm=SHA-256"));
    let auth = format!("Authorization: {value}\r\n");
    sock.send_to(reg(2, &auth).as_bytes(), d.sip).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    let ok = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("expires=600"), "{ok}");
    // The same nonce-count again is a replay: refused.
    sock.send_to(reg(3, &auth).as_bytes(), d.sip).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 403"));
}

fn wait_ports_free(d: &Daemon) {
    let t0 = std::time::Instant::now();
    loop {
        let held = d.rtp_ports_held();
        if held.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "RTP ports still held after the calls ended: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
