//! The `application/dialog-info+xml` document (RFC 4235) a lamp NOTIFY carries: full state,
//! one confirmed dialog per parked call (a slot's lamp), or one dialog per call to an extension
//! (its lamp: early while ringing, confirmed once answered, terminated when over), with its
//! call-id and tags (what a phone needs to pick
//! the call up with Replaces) and who it is. Every value comes from the network (Call-IDs,
//! tags, display names), so each is escaped; the fuzz target `dialog_info` checks that any
//! values make a well-formed document that reads back to the same values.

use orbit_state::{Parked, Ringing};

/// RFC 4235 full state: one confirmed dialog per parked call (the parked caller's dialog, with
/// its call-id and tags, and who it is); none when the slot is free.
pub fn document(entity: &str, version: u32, parked: &[Parked], tenant: &str) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{}\">\n",
        esc(entity)
    );
    for p in parked {
        let slot_uri = format!("sip:{}@{tenant}", p.slot);
        x.push_str(&format!(
            "  <dialog id=\"park-{}\" call-id=\"{}\" local-tag=\"{}\" remote-tag=\"{}\" direction=\"recipient\">\n    <state>confirmed</state>\n    <local>\n      <identity>{}</identity>\n      <target uri=\"{}\"/>\n    </local>\n    <remote>\n      <identity{}>{}</identity>\n      <target uri=\"{}\"/>\n    </remote>\n  </dialog>\n",
            p.id,
            esc(&p.call.call_id),
            esc(&p.call.local_tag),
            esc(&p.call.remote_tag),
            esc(&slot_uri),
            esc(&slot_uri),
            p.call
                .caller_display
                .as_ref()
                .map(|d| format!(" display=\"{}\"", esc(d)))
                .unwrap_or_default(),
            esc(&p.call.caller_uri),
            esc(&p.call.caller_uri),
        ));
    }
    x.push_str("</dialog-info>\n");
    x
}

/// RFC 4235 full state of an extension's lamp: one dialog per call ringing it at any site
/// (early) or answered and in progress (confirmed), with the caller's dialog's call-id and tags
/// (what a lamp key's INVITE with Replaces names to pick it up) and who calls; calls it makes
/// (recorded while watched) with direction initiator and who is called; `ended`, calls just
/// over, as terminated dialogs.
pub fn ext_document(entity: &str, version: u32, ringing: &[Ringing], ended: &[Ringing]) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{}\">\n",
        esc(entity)
    );
    let states = ringing
        .iter()
        .map(|r| {
            (
                r,
                if r.answered_at.is_some() {
                    "confirmed"
                } else {
                    "early"
                },
            )
        })
        .chain(ended.iter().map(|r| (r, "terminated")));
    for (r, state) in states {
        let c = &r.call;
        // The other party: who calls, or for a call the extension makes, who is called.
        let (direction, remote, display) = match &c.called {
            Some(called) => ("initiator", called, None),
            None => ("recipient", &c.caller_uri, c.caller_display.as_ref()),
        };
        x.push_str(&format!(
            "  <dialog id=\"ring-{}\" call-id=\"{}\" local-tag=\"{}\" remote-tag=\"{}\" direction=\"{direction}\">\n    <state>{state}</state>\n    <local>\n      <identity>{}</identity>\n    </local>\n    <remote>\n      <identity{}>{}</identity>\n      <target uri=\"{}\"/>\n    </remote>\n  </dialog>\n",
            r.id,
            esc(&c.call_id),
            esc(&c.local_tag),
            esc(&c.remote_tag),
            esc(entity),
            display
                .map(|d| format!(" display=\"{}\"", esc(d)))
                .unwrap_or_default(),
            esc(remote),
            esc(remote),
        ));
    }
    x.push_str("</dialog-info>\n");
    x
}

/// `s` as XML text or attribute value: markup escaped, and characters XML 1.0 cannot carry
/// (control characters, U+FFFE, U+FFFF) replaced by U+FFFD, so that no value can break the
/// document.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push_str(&format!("&#{};", c as u32)),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}
