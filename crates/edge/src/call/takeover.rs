//! Giving a ringing call to someone other than its callee (call pickup): the forks stop
//! ringing with a CANCEL whose `Reason` says the call was completed elsewhere (RFC 3326, so
//! the phones do not log it as missed), the picker takes side B, and the caller and the picker
//! each get a 200 of ours, resent until each ACKs it, with the relay between them. Who may
//! pick up, and whether the log let them, is pickup's business; this is the calls' half.
//!
//! ```text
//! caller ──INVITE──▶ A │ Call │ B ──INVITE──▶ callee's phones   (ringing)
//!                      │      │ B ──CANCEL, Reason: SIP;cause=200──▶ callee's phones
//!        ◀──200 (picker's SDP, relay A)     ◀──INVITE *8── picker (seated on B)
//!                                           ──200 (caller's SDP, relay B)──▶ picker
//! ```

use super::*;

/// The `Reason` of the CANCELs that stop the phones ringing a picked-up call.
pub(crate) const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

/// Whoever picks the call up: its INVITE, and who it is as the caller is told.
pub(crate) struct Picker<'a> {
    pub key: &'a ServerKey,
    pub flow: Flow,
    pub msg: &'a Message,
    /// The picker's user (its extension, or the one another site's edge vouches for).
    pub user: &'a str,
    /// `P-Asserted-Identity` for the caller: who answered.
    pub identity: &'a str,
    /// `P-Asserted-Identity` for the picker: who called.
    pub caller_identity: &'a str,
}

/// Why a ringing call could not be given to a picker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotPickable {
    /// Gone, answered, or taken by another picker meanwhile.
    NotRinging,
    /// Its caller made no SDP offer (nothing to answer the picker with before the caller
    /// answers ours).
    NoOffer,
    /// The picker offers no codec the caller offered (with the same payload type).
    NoCommonCodec,
}

/// The payload types each side keeps: one codec both offered, and telephone-events.
struct Chosen {
    caller: Vec<u8>,
    picker: Vec<u8>,
}

/// The codec the caller prefers among those the picker offers too, under the same payload
/// type (the relay does not renumber); without a picker's offer, the caller's first.
fn common_codec(caller: &[u8], picker: Option<&[u8]>) -> Option<Chosen> {
    use orbit_media::sdp::{formats, telephone_event};
    let audio = |f: &(u8, String)| !f.1.is_empty() && !f.1.eq_ignore_ascii_case("telephone-event");
    let ours = formats(caller).ok()?;
    let Some(picker) = picker else {
        let first = ours.iter().find(|f| audio(f))?.0;
        let keep: Vec<u8> = std::iter::once(first)
            .chain(telephone_event(caller))
            .collect();
        return Some(Chosen {
            caller: keep.clone(),
            picker: keep,
        });
    };
    let theirs = formats(picker).ok()?;
    let pt = ours
        .iter()
        .filter(|f| audio(f))
        .find(|(pt, n)| {
            theirs
                .iter()
                .any(|(p, m)| p == pt && m.eq_ignore_ascii_case(n))
        })?
        .0;
    let (te_a, te_b) = (telephone_event(caller), telephone_event(picker));
    let both = te_a.is_some() && te_b.is_some();
    Some(Chosen {
        caller: std::iter::once(pt).chain(te_a.filter(|_| both)).collect(),
        picker: std::iter::once(pt).chain(te_b.filter(|_| both)).collect(),
    })
}

impl Calls {
    /// Whether call `id` rings, unanswered and not yet picked up, and its caller made an SDP
    /// offer (without one, there is nothing to answer a picker with).
    pub(crate) fn is_pickable(&self, id: u64) -> bool {
        self.calls.get(&id).is_some_and(|c| {
            c.state == CallState::Ringing && !c.b_answered() && c.sdp[Side::A as usize].is_some()
        })
    }
}

/// Give ringing call `id` to picker `p`: the forks are cancelled, `p` takes side B, caller and
/// picker get their 200s. Nothing changes when it cannot be done.
pub(crate) fn take_ringing(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    p: Picker<'_>,
) -> Result<(), NotPickable> {
    let Some(call) = edge.calls.get_mut(&id) else {
        return Err(NotPickable::NotRinging);
    };
    if call.state != CallState::Ringing || call.b_answered() {
        return Err(NotPickable::NotRinging);
    }
    let Some(caller_sdp) = call.sdp[Side::A as usize].clone() else {
        return Err(NotPickable::NoOffer);
    };
    let span = call.span.clone();
    let _g = span.enter();
    let offer = is_sdp(p.msg).then(|| p.msg.body.clone());
    let Some(codec) = common_codec(&caller_sdp, offer.as_deref()) else {
        return Err(NotPickable::NoCommonCodec);
    };
    let call = edge.calls.get_mut(&id).expect("present");
    call.picked = true;
    call.hold_answer = false;
    call.invite_busy = false;
    call.cancel_reason = Some(COMPLETED_ELSEWHERE.to_string());
    for i in 0..call.branches.len() {
        cancel_branch(edge, now, id, i);
    }
    let tag = edge.sv.ids.tag();
    let call = &edge.calls[&id];
    let caller = call.a.user.clone();
    edge.seat(
        id,
        Side::B,
        Dialog::uas(p.msg, p.flow, &tag, &caller, p.user),
    );
    let call = edge.calls.get_mut(&id).expect("present");
    call.sdp[Side::B as usize] = offer.clone();
    // Each side is left the one codec chosen (and telephone-events if both have them), so
    // that what one sends, the other takes: the relay passes RTP through unchanged.
    let for_picker = orbit_media::sdp::only(&caller_sdp, &codec.caller).unwrap_or_default();
    let for_caller = match offer.as_deref() {
        Some(o) => orbit_media::sdp::only(o, &codec.picker).unwrap_or_default(),
        // No offer from the picker: its answer comes in its ACK, to the same codec.
        None => for_picker.clone(),
    };
    let (mut to_picker, mut to_caller) = (for_picker.clone(), for_caller.clone());
    if let Some(m) = call.media {
        let media = &mut edge.sv.media;
        // Early media may have latched leg B onto a fork's phone: the picker's comes next.
        m.vacate(media, Side::B.leg());
        if let Some(info) = offer
            .as_deref()
            .and_then(|o| orbit_media::sdp::media_info(o).ok())
        {
            m.set_remote(media, Side::B.leg(), info.rtp, info.rtcp, p.flow.addr.ip());
        }
        m.set_dtmf(
            media,
            Side::B.leg(),
            offer.as_deref().and_then(orbit_media::sdp::telephone_event),
        );
        to_picker =
            orbit_media::sdp::rewrite(&for_picker, m.local(Side::B.leg())).unwrap_or(to_picker);
        to_caller =
            orbit_media::sdp::rewrite(&for_caller, m.local(Side::A.leg())).unwrap_or(to_caller);
    }
    // The caller: answered by the picker.
    let a_key = call.a_stx.clone();
    let contact = edge
        .sv
        .local
        .contact(&call.a.contact_user, call.a.flow.proto);
    let to_a = Response::to(&call.a_invite, 200)
        .tag(&call.a.local_tag)
        .header("Contact", &contact)
        .header("Allow", ALLOW)
        .header("P-Asserted-Identity", p.identity)
        .sdp(&to_caller)
        .encode(call.a.flow.addr);
    call.ok_retx[Side::A as usize] = Some(OkRetx {
        cseq: call.a_invite.cseq.seq,
        rt: Retransmitter::new(now, edge.sv.timing),
        bytes: to_a.clone(),
    });
    edge.pending_invites.remove(&a_key);
    edge.sv.stats.calls_answered += 1;
    edge.sv.stats.pickups += 1;
    edge.reply_bytes(now, &a_key, 200, to_a);
    // The picker: connected to the caller, and told who it is.
    let contact = edge.sv.local.contact(&caller, p.flow.proto);
    let to_b = Response::to(p.msg, 200)
        .tag(&tag)
        .header("Contact", &contact)
        .header("Allow", ALLOW)
        .header("P-Asserted-Identity", p.caller_identity)
        .body("application/sdp", &to_picker)
        .encode(p.flow.addr);
    info!(by = %p.user, "picked up");
    send_own_2xx(edge, now, id, Side::B, p.key, p.msg.cseq.seq, to_b);
    Ok(())
}

/// A callee's answer held back for pickup came after a pickup won: the callee's phone is
/// answered and hung up at once (the race lost), and its fork counts as done.
pub(crate) fn refuse_answer(edge: &mut Calls, now: Instant, h: HeldAnswer) {
    if let Some(b) = edge
        .calls
        .get_mut(&h.call)
        .and_then(|c| c.branches.get_mut(h.idx))
    {
        b.state = BranchState::Done;
    }
    ack_and_bye(edge, now, h.flow, &h.msg);
}
