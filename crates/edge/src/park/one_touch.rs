//! One-touch park: the park code (`*68`) pressed during a call, by RFC 4733 digits in RTP or
//! SIP INFO, parks the other party; the presser hears the slot and is hung up (or hears why
//! not, and gets the call back).

use super::*;

/// A digit from a party, by RFC 4733 in RTP or by SIP INFO: the park code parks the other party.
pub(crate) fn on_digit(edge: &mut Parking, now: Instant, cid: u64, side: Side, digit: char) {
    let code = edge.cfg.tenant.features.park.clone();
    if !parkable(edge, cid) {
        return;
    }
    let (buf, last) = &mut edge.park.digits.entry(cid).or_default()[side as usize];
    if last.is_some_and(|t| now.duration_since(t) > Duration::from_secs(3)) {
        buf.clear();
    }
    buf.push(digit);
    *last = Some(now);
    if buf.len() > 16 {
        buf.remove(0);
    }
    if !buf.ends_with(&code) {
        return;
    }
    buf.clear();
    let Some(lot) = edge.park.default_lot.clone() else {
        return;
    };
    let call = &edge.calls[&cid];
    let (codec, pt) = call
        .sdp(side)
        .and_then(sdp::g711)
        .unwrap_or((Codec::Pcmu, 0));
    let span = call.span.clone();
    let _g = span.enter();
    info!(by = ?side, "one-touch park");
    // Parked: the presser hears the slot, then its leg ends. Refused: it hears why, then the
    // other party again.
    propose_park(
        edge,
        now,
        cid,
        side,
        lot,
        None,
        ParkBy::OneTouch { codec, pt },
    );
}

/// Play `clip` to `side` of call `cid`; when it is over, BYE that side (`bye`) or bridge it
/// again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn speak(
    edge: &mut Parking,
    now: Instant,
    cid: u64,
    side: Side,
    clip: Arc<Clip>,
    codec: Codec,
    pt: u8,
    after: Duration,
    bye: bool,
) {
    if let Some(m) = edge.calls[&cid].media {
        m.play(&mut edge.media, side.leg(), clip, (codec, pt), false);
    }
    edge.timers.schedule(
        now + after,
        TimerKey::Prompt {
            call: cid,
            side,
            bye,
        },
    );
}

/// A prompt to a presser has ended: hang its leg up (parked) or let it hear the call again.
pub(crate) fn on_prompt_done(edge: &mut Parking, now: Instant, cid: u64, side: Side, bye: bool) {
    let Some(call) = edge.calls.get(&cid) else {
        return;
    };
    if bye {
        // Still the presser on that side (not a retriever or a recall that took it since).
        if call.vacant() == Some(side) && call.departed_live() {
            if let Some(m) = call.media {
                m.vacate(&mut edge.media, side.leg());
            }
            call::send_bye_departed(edge, now, cid, side);
        }
    } else if let Some(m) = call.media {
        m.bridge(&mut edge.media, side.leg());
    }
}

/// A SIP INFO digit (`application/dtmf-relay` "Signal=5", or `application/dtmf` "5").
pub(crate) fn info_digit(msg: &Message) -> Option<char> {
    let ct = msg.content_type()?.to_ascii_lowercase();
    let body = std::str::from_utf8(&msg.body).ok()?;
    let v = if ct.starts_with("application/dtmf-relay") {
        body.lines()
            .find_map(|l| {
                l.split_once('=')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            })?
            .1
    } else if ct.starts_with("application/dtmf") {
        body
    } else {
        return None;
    };
    let c = v.trim().chars().next()?;
    (c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')).then_some(c)
}
