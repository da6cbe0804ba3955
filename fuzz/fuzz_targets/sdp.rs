//! SDP as the edge reads it from phones: arbitrary bytes must never panic any reader, and an
//! offer the edge accepts and rewrites to the relay must read back with the relay's address and
//! the same formats (what the other party is offered is what the first one sent, re-addressed).
#![no_main]
use libfuzzer_sys::fuzz_target;
use orbit_media::sdp;

fuzz_target!(|data: &[u8]| {
    let _ = sdp::g711(data);
    let _ = sdp::telephone_event(data);
    let formats = sdp::formats(data);
    let Ok(info) = sdp::media_info(data) else {
        return;
    };
    let relay: std::net::SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let Ok(out) = sdp::rewrite(data, relay) else {
        return;
    };
    let back = sdp::media_info(&out).expect("a rewritten offer reads back");
    if info.rtp.is_some() {
        // (A held or rejected stream stays so.)
        assert_eq!(back.rtp, Some(relay), "the relay's address, {:?}", String::from_utf8_lossy(&out));
    }
    assert_eq!(sdp::formats(&out).ok(), formats.ok(), "the same formats");
});
