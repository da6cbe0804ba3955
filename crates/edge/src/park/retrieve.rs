//! Retrieve: an INVITE to a slot claims whatever is parked there (the log decides), and the
//! retriever takes the vacant side of the parked call, here or, held at another site, over the
//! trunk. A retriever who cancels while its claim is ordered puts the call back in its slot,
//! and so does a claim the retriever was told failed (503: the registry out of reach) and the
//! watch then shows committed after all.
//!
//! ```text
//! INVITE 701 ──▶ codec check (replica) ──▶ Claim ──▶ here: 200 with the vacant relay leg
//!                                                ├─▶ elsewhere: trunk INVITE to the holding site
//!                                                └─▶ outcome unknown: 503; if the watch shows it
//!                                                    committed later: Park it again, at once
//! ```

use super::*;

/// How long a claim given up as unavailable is looked out for on the watch: the link gives
/// up on a proposal after seconds, and one that reached the leader commits soon after or not
/// at all.
const GIVEN_UP_WATCHED: Duration = Duration::from_secs(15);
/// Claims given up that are looked out for at once (the oldest forgotten first): one per
/// retriever and slot, grown only by this edge's own retrieves.
const GIVEN_UP_KEPT: usize = 1024;

/// A retrieve whose claim is being ordered: the retriever's INVITE.
pub(crate) struct AfterClaim {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    pub retriever: String,
    pub slot: u32,
}

pub(crate) fn nobody_parked(edge: &mut Parking, now: Instant, a: &AfterClaim, code: u16) {
    let reason = match code {
        404 => format!("Nobody Parked On {}", a.slot),
        _ => "Parking Unavailable".to_string(),
    };
    let bytes = Response::to(&a.msg, code)
        .reason(&reason)
        .encode(a.flow.addr);
    edge.reply_bytes(now, &a.key, code, bytes);
}

/// The retriever must take the parked party's codec: `Err` names it when the offer has none.
pub(crate) fn retriever_pt(ps: &ParkState, offer: Option<&[u8]>) -> Result<u8, Codec> {
    match offer {
        Some(o) => offer_pt(o, ps.codec).ok_or(ps.codec),
        None => Ok(ps.pt),
    }
}

/// The payload type an SDP offer gives `codec`, if it offers it.
pub(crate) fn offer_pt(offer: &[u8], codec: Codec) -> Option<u8> {
    sdp::formats(offer)
        .unwrap_or_default()
        .iter()
        .find(|(_, n)| Codec::from_name(n) == Some(codec))
        .map(|(pt, _)| *pt)
}

pub(crate) fn wrong_codec(edge: &mut Parking, now: Instant, a: &AfterClaim, codec: Codec) {
    let reason = format!("Parked Call Uses {}", codec.name());
    let bytes = Response::to(&a.msg, 488)
        .reason(&reason)
        .encode(a.flow.addr);
    edge.reply_bytes(now, &a.key, 488, bytes);
}

/// An INVITE to a slot: claim whatever is parked there (the log decides; what this edge's
/// state shows serves only to refuse a codec the parked call cannot take before claiming).
pub(crate) fn on_retrieve(
    edge: &mut Parking,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
    retriever: String,
    slot: u32,
) {
    let tenant = edge.cfg.tenant.domain.clone();
    let a = AfterClaim {
        key: key.clone(),
        flow,
        msg,
        retriever,
        slot,
    };
    let here = edge
        .orbit
        .in_slot(&tenant, slot)
        .and_then(|p| edge.park.by_id.get(&p.id))
        .and_then(|cid| edge.park.held.get(cid));
    let offer = is_sdp(&a.msg).then_some(&a.msg.body[..]);
    if let Some(ps) = here {
        if let Err(codec) = retriever_pt(ps, offer) {
            return wrong_codec(edge, now, &a, codec);
        }
    } else if let (Some(codec), Some(o)) = (
        edge.orbit
            .in_slot(&tenant, slot)
            .and_then(|p| p.call.codec.as_deref())
            .and_then(Codec::from_name),
        offer,
    ) {
        // Held at another site: its codec is in the registry's record of the park.
        if offer_pt(o, codec).is_none() {
            return wrong_codec(edge, now, &a, codec);
        }
    }
    // On one site the claim is applied at once and its outcome answers the INVITE before this
    // input is done: a 100 would only precede the final response in the same batch.
    if edge.port.backend != crate::services::orbit_port::Backend::Local {
        edge.reply(now, key, Response::to(&a.msg, 100));
    }
    // The retrieve joins the trace of the park it is after (wherever that was made).
    let parked_trace = edge
        .orbit
        .in_slot(&tenant, slot)
        .and_then(|p| p.call.trace.clone());
    let by = claimant(edge, &a.retriever);
    let claim = Command::Claim {
        tenant,
        slot,
        park: None,
        by: by.clone(),
    };
    let span = orbit_trace::within(
        parked_trace.as_deref(),
        || info_span!(parent: None, "retrieve", slot, by = %a.retriever, edge = %edge.id),
    );
    let _g = span.enter();
    edge.park.claiming.insert(a.key.clone(), false);
    // A new claim of its own by the same retriever: an old one given up is no longer told
    // apart from it.
    edge.park.given_up.remove(&(slot, by));
    edge.propose_then(now, claim, ParkThen::Retrieve(a));
}

/// The claim's outcome: take the call here, or from the site holding it over the trunk.
pub(crate) fn claim_outcome(edge: &mut Parking, now: Instant, a: AfterClaim, outcome: Outcome) {
    if let Ok(Event::Claimed { parked, .. }) = &outcome {
        if parked.call.edge == edge.id {
            edge.park.claimed_here.insert(parked.id);
        }
    }
    if edge.park.claiming.remove(&a.key) == Some(true) {
        return claim_cancelled(edge, now, &a, outcome);
    }
    match outcome {
        Ok(Event::Claimed { parked, .. }) if parked.call.edge == edge.id => {
            match edge.park.by_id.get(&parked.id).copied() {
                Some(cid) => take_parked(edge, now, &a, cid),
                // Claimed in the entry that parked it, whose answer has not come yet: taken
                // when it does ([`crate::park::park_outcome`]).
                None => match being_parked(edge, &parked) {
                    Some(cid) => {
                        edge.park.claimed_early.insert(cid, a);
                    }
                    None => nobody_parked(edge, now, &a, 404),
                },
            }
        }
        Ok(Event::Claimed { parked, .. }) => retrieve_remote(edge, now, a, parked),
        Err(OrbitError::Unavailable(_)) => {
            given_up(edge, now, &a);
            nobody_parked(edge, now, &a, 503)
        }
        _ => nobody_parked(edge, now, &a, 404),
    }
}

/// Who a retrieve here claims for: `<this edge>/<retriever>`, so that the holding edge gives
/// the call to this edge's trunk INVITE only, a give-back is this edge's to send, and a claim
/// on the watch is known for this edge's own.
pub(crate) fn claimant(edge: &Parking, retriever: &str) -> String {
    format!("{}/{retriever}", edge.id)
}

/// The claim for `a` may or may not have been committed, and its retriever was told it
/// failed: look out for it on the watch ([`given_up_committed`]).
fn given_up(edge: &mut Parking, now: Instant, a: &AfterClaim) {
    let by = claimant(edge, &a.retriever);
    let g = &mut edge.park.given_up;
    if g.len() >= GIVEN_UP_KEPT {
        if let Some(oldest) = g.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
            g.remove(&oldest);
        }
    }
    g.insert((a.slot, by), now);
}

/// The watch shows a claim of the call in `parked`'s slot by `by`: if it is one this edge gave
/// up as unavailable (its retriever was answered 503), nobody will come for the call, so it
/// goes back into its slot now rather than when the holding edge tires of waiting for a
/// trunk INVITE (its fetch wait, 10 s, would make the recall that late).
pub(crate) fn given_up_committed(edge: &mut Parking, now: Instant, parked: &Parked, by: &str) {
    if parked.lot.tenant != edge.cfg.tenant.domain {
        return;
    }
    let Some(since) = edge.park.given_up.remove(&(parked.slot, by.to_string())) else {
        return;
    };
    if now > since + GIVEN_UP_WATCHED {
        return;
    }
    info!(
        park = parked.id,
        slot = parked.slot,
        %by,
        "a claim given up as unavailable was committed after all: giving the call back"
    );
    give_back(edge, now, parked, by);
}

/// The retriever cancelled while its claim was being ordered: its INVITE gets its 487 now, and
/// a call it won goes back into the same slot (a new park with a fresh timer), wherever it is
/// held ([`give_back`]).
pub(crate) fn claim_cancelled(edge: &mut Parking, now: Instant, a: &AfterClaim, outcome: Outcome) {
    let bytes = Response::to(&a.msg, 487)
        .reason("Request Terminated")
        .encode(a.flow.addr);
    edge.reply_bytes(now, &a.key, 487, bytes);
    if let Err(OrbitError::Unavailable(_)) = outcome {
        return given_up(edge, now, a);
    }
    if let Ok(Event::Claimed { parked, .. }) = outcome {
        info!(
            park = parked.id,
            slot = parked.slot,
            "retriever cancelled after its claim won: giving the call back"
        );
        let by = claimant(edge, &a.retriever);
        give_back(edge, now, &parked, &by);
    }
}

/// A park of a call held here that this edge did not make (a retriever who cancelled after
/// winning put it back): the call whose own park was claimed and not fetched takes the new
/// one. Its music never stopped. A recall still ringing for the old park stops: the new park
/// has a deadline of its own.
pub(crate) fn adopt_repark(edge: &mut Parking, now: Instant, p: &orbit_state::Parked) {
    if edge.park.by_id.contains_key(&p.id) {
        return;
    }
    // The call is found by its parked dialog (our tag names it), not by a scan of every call
    // held here: this runs for every park of our own, before its outcome has recorded it.
    let key = (p.call.call_id.clone(), p.call.local_tag.clone());
    let found = edge.dialogs.get(&key).and_then(|&cid| {
        let ps = edge.park.held.get(&cid)?;
        let d = edge.calls.get(&cid)?.dialog_ref(ps.parked);
        (edge.orbit.parked(ps.id).is_none()
            && d.call_id == p.call.call_id
            && d.local_tag == p.call.local_tag)
            .then_some((ps.id, cid))
    });
    let Some((old, cid)) = found else { return };
    unhold(edge, old);
    cancel_recall(edge, now, cid);
    edge.park.by_id.insert(p.id, cid);
    if let Some(ps) = edge.park.held.get_mut(&cid) {
        ps.id = p.id;
        ps.slot = p.slot;
        ps.recall = None;
    }
    info!(
        old,
        park = p.id,
        slot = p.slot,
        "parked call back in its slot"
    );
}

/// Give the parked call `cid` (claimed) to the retriever whose INVITE is `a`: it takes the
/// vacant side and gets a 200 with the relay's vacant leg in the parked party's codec.
pub(crate) fn take_parked(edge: &mut Parking, now: Instant, a: &AfterClaim, cid: u64) {
    let call = &edge.calls[&cid];
    let ps = edge
        .park
        .held
        .get(&cid)
        .expect("by_id maps to parked calls");
    let (codec, parked, label, park_id) = (ps.codec, ps.parked, ps.label.clone(), ps.id);
    let offer = is_sdp(&a.msg).then(|| a.msg.body.clone());
    let pt = match retriever_pt(ps, offer.as_deref()) {
        Ok(pt) => pt,
        Err(codec) => {
            // Claimed, but the offer changed since the check: nobody else can have it now.
            wrong_codec(edge, now, a, codec);
            return hangup(
                edge,
                now,
                cid,
                "retriever cannot take the parked call's codec",
            );
        }
    };
    let te = offer.as_deref().and_then(sdp::telephone_event).or(ps.te);
    let span = call.span.clone();
    let _g = span.enter();
    unhold(edge, park_id);
    cancel_recall_taken(edge, now, cid);
    if edge.calls[&cid].departed_live() {
        call::send_bye_departed(edge, now, cid, parked.other());
    }
    let tag = edge.ids.tag();
    let v = parked.other();
    let parked_user = edge.calls[&cid].dialog_ref(parked).user.clone();
    edge.seat(
        cid,
        v,
        Dialog::uas(&a.msg, a.flow, &tag, &parked_user, &a.retriever),
    );
    let now_ms = edge.now_ms(now);
    let call = edge.b2bua.calls.get_mut(&cid).expect("present");
    call.fill(v);
    let ps = edge.park.held.remove(&cid).expect("parked");
    call.set_sdp(v, offer.clone());
    let mut body = vec![];
    if let Some(m) = call.media {
        let media = &mut edge.media;
        m.vacate(media, v.leg());
        if let Some(info) = offer.as_deref().and_then(|o| sdp::media_info(o).ok()) {
            m.set_remote(media, v.leg(), info.rtp, info.rtcp, a.flow.addr.ip());
        }
        m.bridge(media, parked.leg());
        m.bridge(media, v.leg());
        body = relay_offer(now_ms, m.local(v.leg()), (codec, pt, te));
    }
    info!(slot = ps.slot, by = %a.retriever, "retrieved");
    let c = edge.local.contact(&parked_user, a.flow.proto);
    let identity = format!(
        "\"{}: {}\" <{}>",
        ps.slot,
        label.replace('"', ""),
        ps.caller_uri
    );
    let bytes = Response::to(&a.msg, 200)
        .reason("OK")
        .tag(&tag)
        .header("Contact", &c)
        .header("Allow", ALLOW)
        .header("P-Asserted-Identity", &identity)
        .body("application/sdp", &body)
        .encode(a.flow.addr);
    call::send_own_2xx(edge, now, cid, v, &a.key, a.msg.cseq.seq, bytes);
}
