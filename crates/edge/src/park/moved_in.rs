//! A parked call moved here from a draining edge: the taking side of `moving.rs` (which
//! holds the picture). The offer checked against the park's record and held on probation;
//! once the log shows the move, the music and the re-INVITE that points the party here; the
//! call let go without a word if the log takes the park elsewhere or never moves it.

use bytes::Bytes;
use orbit_sip::transport::Proto;

use super::*;

/// How long an edge holds a call offered to it before the log shows the move.
pub(crate) const PROBATION: Duration = Duration::from_secs(5);
/// How often the new edge re-INVITEs a party that answers 491 (its own re-INVITE crossed
/// ours), and how long it waits in between.
const REINVITE_TRIES: u32 = 3;
const REINVITE_RETRY: Duration = Duration::from_secs(1);

/// Whether `s` can go into a header as it is (no line breaks, no other controls).
fn header_safe(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// A trunk MESSAGE from edge `from` offering park `park`.
pub(crate) fn on_move_offer(
    edge: &mut Parking,
    now: Instant,
    key: &ServerKey,
    msg: Message,
    from: &str,
    park: ParkId,
) {
    let refuse = |edge: &mut Parking, code: u16, why: &'static str| {
        warn!(park, %from, code, why, "parked call offered here not taken");
        edge.reply(now, key, Response::to(&msg, code).reason(why));
    };
    if edge.draining.is_some() {
        return refuse(edge, 503, "Draining Too");
    }
    let Ok(o) = serde_json::from_slice::<MoveOffer>(&msg.body) else {
        return refuse(edge, 400, "Bad Offer");
    };
    if o.park != park {
        return refuse(edge, 400, "Bad Offer");
    }
    // Only the edge that holds the call may offer it, and only its own dialog: the one the
    // park's record names (so that no other dialog can be taken over this way).
    let Some(parked) = edge.orbit.parked(park).cloned() else {
        return refuse(edge, 403, "Not Held By Sender");
    };
    if parked.call.edge != from || parked.phase != orbit_state::Phase::Waiting {
        return refuse(edge, 403, "Not Held By Sender");
    }
    let remote_tag = NameAddr::parse(&o.remote_hdr).and_then(|n| n.tag().map(str::to_string));
    if o.call_id != parked.call.call_id
        || o.local_tag != parked.call.local_tag
        || remote_tag.as_deref() != Some(parked.call.remote_tag.as_str())
    {
        return refuse(edge, 403, "Not That Call");
    }
    let texts = [
        &o.local_hdr,
        &o.remote_hdr,
        &o.remote_target,
        &o.contact_user,
        &o.user,
        &o.label,
    ];
    if !texts.iter().all(|t| header_safe(t))
        || !o.route_set.iter().all(|r| header_safe(r))
        || !orbit_state::names::is_trunk_addr(&o.addr)
    {
        return refuse(edge, 400, "Bad Offer");
    }
    if edge.park.by_id.contains_key(&park)
        || edge
            .dialogs
            .contains_key(&(o.call_id.clone(), o.local_tag.clone()))
    {
        return refuse(edge, 409, "Taken Already");
    }
    if edge.calls.len() >= edge.max_calls {
        return refuse(edge, 503, "No Room");
    }
    let codec = parked
        .call
        .codec
        .as_deref()
        .and_then(Codec::from_name)
        .unwrap_or(Codec::Pcmu);
    let Ok(info) = sdp::media_info(o.sdp.as_bytes()) else {
        return refuse(edge, 400, "Bad Offer");
    };
    let side = match o.side {
        PartySide::A => Side::A,
        PartySide::B => Side::B,
    };
    let cid = edge.b2bua.next_call_id();
    let relay = match edge.open_relay(now, cid) {
        Ok(r) => r,
        Err(_) => return refuse(edge, 503, "No Relay Ports"),
    };
    let party = Dialog {
        call_id: o.call_id,
        local_tag: o.local_tag,
        local_hdr: o.local_hdr,
        remote_hdr: o.remote_hdr,
        remote_target: o.remote_target,
        route_set: o.route_set,
        local_cseq: o.local_cseq,
        remote_cseq: o.remote_cseq,
        flow: Flow {
            proto: Proto::Udp,
            addr: o.addr,
            conn: 0,
        },
        contact_user: o.contact_user,
        user: o.user,
    };
    let span = orbit_trace::within(
        parked.call.trace.as_deref(),
        || info_span!(parent: None, "call", id = cid, caller = %parked.call.caller_uri, slot = parked.slot, edge = %edge.id),
    );
    let _g = span.clone().entered();
    relay.set_remote(
        &mut edge.b2bua.sv.media,
        side.leg(),
        info.rtp,
        info.rtcp,
        o.addr.ip(),
    );
    // Nothing is played, and nothing sent to the party, until the log shows the move: until
    // then the call is the other edge's, which may yet keep it.
    call::insert_moved_call(
        edge,
        now,
        cid,
        span.clone(),
        side,
        party,
        relay,
        msg.clone(),
        key,
        Some(Bytes::from(o.sdp.into_bytes())),
    );
    edge.park.held.insert(
        cid,
        ParkState {
            id: park,
            slot: parked.slot,
            lot: parked.lot.clone(),
            parked: side,
            codec,
            pt: o.pt,
            te: o.te,
            label: o.label,
            caller_uri: parked.call.caller_uri.clone(),
            parker: parked.call.parker.clone(),
            recall: None,
            claim_given_up: None,
        },
    );
    edge.park.by_id.insert(park, cid);
    let until = now + PROBATION;
    edge.park.probation.insert(park, (cid, until));
    edge.timers.schedule(until, TimerKey::Probation(park));
    info!(park, %from, "parked call offered here: on probation until the log moves it");
    edge.reply(now, key, Response::to(&msg, 200));
}

/// The log moved park `parked` here: the call on probation is this edge's now. Its party
/// hears this edge's music and is re-INVITEd to this edge's Contact and relay. A move here of
/// a call this edge does not have (let go before the move came) is ended, so that its slot
/// does not stay taken by nobody.
pub(crate) fn on_moved_here(edge: &mut Parking, now: Instant, parked: &Parked, from: &str) {
    let Some((cid, _)) = edge.park.probation.remove(&parked.id) else {
        if !edge.park.by_id.contains_key(&parked.id) {
            warn!(park = parked.id, %from, "a parked call moved here that this edge let go: ending it");
            let end = Command::End {
                park: parked.id,
                reason: EndReason::Lost,
            };
            edge.propose(now, end, Then::Nothing);
        }
        return;
    };
    info!(park = parked.id, slot = parked.slot, %from, "parked call taken over");
    let (Some(ps), Some(call)) = (edge.park.held.get(&cid), edge.b2bua.calls.get(&cid)) else {
        return;
    };
    let music = edge
        .park
        .music
        .get(&ps.lot.park_ext)
        .cloned()
        .unwrap_or_else(builtin_music);
    if let Some(m) = call.media {
        m.play(
            &mut edge.b2bua.sv.media,
            ps.parked.leg(),
            music,
            (ps.codec, ps.pt),
            true,
        );
    }
    reinvite(edge, now, parked.id, 1);
}

/// Point the party of moved park `park` at this edge: re-INVITE it with this edge's Contact
/// and relay (try `attempt`).
fn reinvite(edge: &mut Parking, now: Instant, park: ParkId, attempt: u32) {
    let Some(&cid) = edge.park.by_id.get(&park) else {
        return;
    };
    let (Some(ps), Some(call)) = (edge.park.held.get(&cid), edge.b2bua.calls.get_mut(&cid)) else {
        return;
    };
    let Some(m) = call.media else {
        return;
    };
    let body = relay_offer(
        edge.b2bua.sv.now_ms(now),
        m.local(ps.parked.leg()),
        (ps.codec, ps.pt, ps.te),
    );
    let d = call.dialog(ps.parked);
    edge.b2bua.sv.send_in_dialog(
        now,
        d,
        "INVITE",
        &[],
        Some(("application/sdp", &body)),
        Owner::MovedHere { park, attempt },
    );
}

/// The party's answer to the re-INVITE that points it here. A 2xx: ACK it (again, for a
/// repeated 2xx). A 491 (its own re-INVITE crossed ours): again shortly. Anything else: the
/// party cannot be moved, and this edge, which holds its park now, ends the call.
pub(crate) fn moved_here_response(
    edge: &mut Parking,
    now: Instant,
    park: ParkId,
    attempt: u32,
    msg: Option<Message>,
) {
    let Some(&cid) = edge.park.by_id.get(&park) else {
        return;
    };
    let Some(side) = edge.park.held.get(&cid).map(|ps| ps.parked) else {
        return;
    };
    match msg.as_ref().map(Message::code) {
        Some(200..=299) => {
            let cseq = msg.as_ref().map_or(0, |m| m.cseq.seq);
            call::send_own_ack(edge, cid, side, cseq);
        }
        Some(491) if attempt < REINVITE_TRIES => {
            edge.timers
                .schedule(now + REINVITE_RETRY, TimerKey::Reinvite { park, attempt });
        }
        code => {
            warn!(
                park,
                ?code,
                "the moved parked party did not take the re-INVITE: ending it"
            );
            hangup(edge, now, cid, "could not be moved");
        }
    }
}

/// A 491'd re-INVITE's wait is over: send it again.
pub(crate) fn on_reinvite_timer(edge: &mut Parking, now: Instant, park: ParkId, attempt: u32) {
    reinvite(edge, now, park, attempt + 1);
}

/// The log took park `park` elsewhere (claimed, ended) while this edge held it on
/// probation: let it go now, without a word to its party.
pub(crate) fn on_taken_elsewhere(edge: &mut Parking, park: ParkId) {
    if let Some((cid, _)) = edge.park.probation.remove(&park) {
        info!(
            park,
            "the parked call offered here went elsewhere: letting it go"
        );
        forget(edge, cid, park);
    }
}

/// A probation has run its time without the move: let the call go without a word to its
/// party (its dialog is still the other edge's).
pub(crate) fn on_probation_timer(edge: &mut Parking, now: Instant, park: ParkId) {
    let Some(&(cid, until)) = edge.park.probation.get(&park) else {
        return;
    };
    if now < until {
        return; // an older timer of this park
    }
    edge.park.probation.remove(&park);
    warn!(
        park,
        "the move of a parked call offered here was not ordered: letting it go"
    );
    forget(edge, cid, park);
}

/// Every call on probation here, let go (this edge stops): their parties are other edges'.
pub(crate) fn drop_probation(edge: &mut Parking) {
    let all: Vec<(ParkId, u64)> = edge
        .park
        .probation
        .drain()
        .map(|(park, (cid, _))| (park, cid))
        .collect();
    for (park, cid) in all {
        forget(edge, cid, park);
    }
}

/// Whether call `cid` is on probation here (not this edge's yet).
pub(crate) fn on_probation(edge: &Parking, park: ParkId) -> bool {
    edge.park.probation.contains_key(&park)
}
