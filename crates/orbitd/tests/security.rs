//! Strangers trying, end to end against the real daemon over real sockets.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;

/// A caller's call is up; someone at another address who knows its Call-ID and tags (a lamp
/// NOTIFY shows them) sends BYE. The edge challenges it (only the caller, by digest, could
/// move the dialog to another address), and the call goes on: media flows both
/// ways afterwards, and the caller's own BYE later ends it normally at both ends.
#[test]
fn a_forged_bye_from_another_address_leaves_the_call_up() {
    require_sipp();
    let d = Daemon::start();
    let callee_port = free_port();
    d.register("1002", callee_port);
    let (callee_media, caller_media) = (RtpPeer::bind(), RtpPeer::bind());
    let uas = Sipp::new(&d, "uas_answer.xml")
        .key("rtpport", &callee_media.port().to_string())
        .port(callee_port)
        .spawn();
    let uac = Sipp::new(&d, "uac_call.xml")
        .args(["-s", "1002", "-au", "1001", "-ap", "pw1001", "-d", "3000"])
        .key("caller", "1001")
        .key("rtpport", &caller_media.port().to_string())
        .spawn();
    let dialog = uac.wait_log("dialog", Duration::from_secs(10));
    let mut ids = dialog.split(';');
    let (call_id, from_tag, to_tag) = (
        ids.next().unwrap().to_string(),
        ids.next().unwrap().to_string(),
        ids.next().unwrap().to_string(),
    );
    let port = |s: String| SocketAddr::from(([127, 0, 0, 1], s.parse::<u16>().expect("port")));
    let caller_relay = port(uac.wait_log("relay_port", Duration::from_secs(10)));
    let callee_relay = port(uas.wait_log("relay_port", Duration::from_secs(10)));

    let stranger = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    stranger
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let me = stranger.local_addr().unwrap();
    let bye = format!(
        "BYE sip:1002@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKforged1;rport\r\nFrom: \"Caller\" <sip:1001@orbit.local>;tag={from_tag}\r\nTo: <sip:1002@orbit.local>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 10 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        sip = d.sip
    );
    stranger.send_to(bye.as_bytes(), d.sip).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = stranger
        .recv_from(&mut buf)
        .expect("an answer to the forged BYE");
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("SIP/2.0 407 "), "{answer}");

    // Media still flows both ways through the relay.
    let linger = Duration::from_millis(300);
    let (caller_got, callee_got) = std::thread::scope(|s| {
        let a = s.spawn(|| caller_media.exchange(caller_relay, 30, 0xA, linger));
        let b = s.spawn(|| callee_media.exchange(callee_relay, 30, 0xB, linger));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(caller_got.packets, 30, "{caller_got:?}");
    assert_eq!(callee_got.packets, 30, "{callee_got:?}");
    // The caller hangs up as planned: its BYE finds the call (200), the callee gets the BYE.
    let (uac, uas) = (uac.wait(), uas.wait());
    assert!(uac.ok(), "caller: {}", uac.errors);
    assert!(uas.ok(), "callee: {}", uas.errors);
}
