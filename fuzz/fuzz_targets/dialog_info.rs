//! The lamp document (RFC 4235) built from values that came from the network: whatever the
//! Call-ID, tags, display name and caller URI, the document must be well-formed XML and read
//! back to the same values (after XML's own replacement of characters it cannot carry).
#![no_main]
use libfuzzer_sys::fuzz_target;
use quick_xml::events::Event;
use quick_xml::Reader;

/// What XML 1.0 can carry of `s`, as the document builder writes it.
fn carried(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut f = text.split('\u{1}');
    let mut next = || f.next().unwrap_or("").to_string();
    let (call_id, local_tag, remote_tag, display, caller_uri) = (next(), next(), next(), next(), next());
    let parked = orbit_state::Parked {
        id: 7,
        lot: orbit_state::LotKey { tenant: "t".into(), park_ext: "700".into() },
        slot: 701,
        call: orbit_state::CallInfo {
            caller_uri: caller_uri.clone(),
            caller_display: Some(display.clone()),
            parker: "1001".into(),
            edge: "a".into(),
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag: remote_tag.clone(),
            codec: None,
            trace: None,
        },
        parked_at: 0,
        deadline: 1,
        phase: orbit_state::Phase::Waiting,
        sent_to: None,
    };
    let doc = orbit_edge::dialog_info::document("sip:701@t", 1, &[parked], "t");
    let mut r = Reader::from_str(&doc);
    let mut seen = None;
    loop {
        match r.read_event() {
            Err(e) => panic!("ill-formed document: {e}\n{doc}"),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) if e.name().as_ref() == b"dialog" => {
                let attr = |n: &str| {
                    e.try_get_attribute(n).unwrap().map(|a| a.unescape_value().unwrap().into_owned())
                };
                seen = Some((attr("call-id"), attr("local-tag"), attr("remote-tag")));
            }
            Ok(_) => {}
        }
    }
    assert_eq!(
        seen,
        Some((Some(carried(&call_id)), Some(carried(&local_tag)), Some(carried(&remote_tag)))),
        "{doc}"
    );
});
