//! Attended park: a call to the lot's park extension (`700`) is answered by the edge, which
//! speaks the slot the caller's other call will take and holds it for a minute; the REFER with
//! `Replaces` that follows ([`super::refer`]) parks the other call in that slot.

use super::*;

/// A call to the park extension: the edge answers and speaks the slot the caller's other call
/// will be parked in, and waits for the REFER with Replaces that completes the park.
#[derive(Clone)]
pub(crate) struct Consult {
    pub lot: LotKey,
    pub slot: u32,
}

/// How long the edge holds an announced slot for the REFER that completes an attended park.
pub(crate) const CONSULT_HOLD: Duration = Duration::from_secs(60);

pub(crate) fn on_park_call(
    edge: &mut Parking,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
    parker: String,
    lot: LotKey,
) {
    let owner = match edge.admit_call(&parker, &flow) {
        Ok(o) => o,
        Err(code) => return edge.reply(now, key, Response::to(&msg, code)),
    };
    let offer = is_sdp(&msg).then(|| msg.body.clone());
    let Some((codec, pt)) = offer.as_deref().and_then(sdp::g711) else {
        let bytes = Response::to(&msg, 488)
            .reason("G.711 Needed For Prompts")
            .encode(flow.addr);
        return edge.reply_bytes(now, key, 488, bytes);
    };
    let id = edge.next_call_id();
    let media = match edge.open_relay(now, id) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "no media ports");
            return edge.reply(now, key, Response::to(&msg, 503));
        }
    };
    let announced = edge.park.announced.clone();
    let slot = edge.orbit.free_slot(&lot, |s| announced.contains(&s));
    let tag = edge.ids.tag();
    let d = Dialog::uas(&msg, flow, &tag, &lot.park_ext, &parker);
    let span = orbit_trace::within(
        None,
        || info_span!(parent: None, "call", id, caller = %parker, callee = %lot.park_ext, edge = %edge.id),
    );
    let _g = span.enter();
    let info = offer.as_deref().and_then(|o| sdp::media_info(o).ok());
    if let Some(i) = info {
        media.set_remote(&mut edge.media, Leg::A, i.rtp, i.rtcp, flow.addr.ip());
    }
    let te = offer.as_deref().and_then(sdp::telephone_event);
    let body = relay_offer(edge.now_ms(now), media.local(Leg::A), (codec, pt, te));
    let (clip, consult) = match slot {
        Some(s) => {
            info!(slot = s, "attended park: slot announced");
            edge.park.announced.insert(s);
            (
                Arc::new(prompts().parked_on(s)),
                Some(Consult {
                    lot: lot.clone(),
                    slot: s,
                }),
            )
        }
        None => {
            info!("attended park: lot full");
            (prompts().lot_full.clone(), None)
        }
    };
    let hold = if consult.is_some() {
        CONSULT_HOLD
    } else {
        clip.duration() + Duration::from_millis(200)
    };
    media.play(&mut edge.media, Leg::A, clip, (codec, pt), false);
    let invite = msg.clone();
    call::insert_app_call(
        edge,
        now,
        id,
        span.clone(),
        d,
        media,
        invite,
        key,
        offer,
        owner,
    );
    if let Some(c) = consult {
        edge.park.consults.insert(id, c);
    }
    let c = edge.local.contact(&lot.park_ext, flow.proto);
    let bytes = Response::to(&msg, 200)
        .reason("OK")
        .tag(&tag)
        .header("Contact", &c)
        .header("Allow", ALLOW)
        .body("application/sdp", &body)
        .encode(flow.addr);
    call::send_own_2xx(edge, now, id, Side::A, key, msg.cseq.seq, bytes);
    edge.timers.schedule(now + hold, TimerKey::AppHangup(id));
}

/// The call to the park extension has lasted its time (the prompt, or the wait for the REFER).
pub(crate) fn on_app_hangup(edge: &mut Parking, now: Instant, id: u64) {
    if edge
        .calls
        .get(&id)
        .is_some_and(|c| edge.park.consults.contains_key(&id) || c.vacant() == Some(Side::B))
    {
        hangup(edge, now, id, "park prompt done");
    }
}
