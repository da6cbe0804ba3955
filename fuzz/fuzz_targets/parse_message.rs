//! The parser must never panic, and whatever it accepts must survive the typed accessors the
//! edge uses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = orbit_sip::Limits::default();
    if let Ok(m) = orbit_sip::parse(bytes::Bytes::copy_from_slice(data), &limits) {
        let _ = m.top_via().map(|v| (v.branch(), v.sent_by()));
        let _ = (m.from_tag(), m.to_tag(), m.max_forwards(), m.call_id());
        for c in m.values(orbit_sip::Name::Contact) {
            let _ = orbit_sip::header::NameAddr::parse(c);
        }
        if let Some(u) = m.uri() {
            let _ = (u.user(), u.host(), u.param("transport"));
        }
    }
    let mut f = orbit_sip::transport::Framer::new(4096);
    f.push(data);
    for _ in 0..64 {
        if matches!(f.next_frame(), orbit_sip::transport::Frame::Need) {
            break;
        }
    }
});
