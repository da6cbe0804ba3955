//! Giving a claimed call back. A claim this edge won for a retriever who is no longer there
//! (it cancelled while the claim was ordered, or was answered 503 when the claim's outcome
//! never came and the watch then showed it committed after all) leaves the call without
//! anyone to fetch it. Held here, the call is parked again at once. Held at another site, it
//! is that edge's to park (the registry lets an edge park only the calls it holds), so this
//! edge tells it with a signed trunk MESSAGE from the retriever; the holding edge, whose
//! replica shows that claim made by that site for that retriever (`by` is
//! `<site>/<retriever>`), puts the call back into its slot then, not when its wait for a
//! trunk INVITE that will not come runs out (10 s).
//!
//! ```text
//! claimant ──MESSAGE sip:702@holder, From 1003, X-Orbit-Claim: 17, signed──▶ holder
//!          ◀─200: Claimed(17) by 1003 shown ─▶ Park again (702 if free)
//!          ◀─202: not shown yet ─▶ kept; Park again when the watch shows it, by 1003
//!          ◀─403 Not The Claimant / 404 Park Not Held Here
//! ```

use orbit_sip::transport::Proto;

use super::*;
use crate::trunk::Claim;

/// The give-back's body type (the body is the park's id).
pub(crate) const GIVE_BACK_TYPE: &str = "application/x-orbit-give-back";
/// Give-backs kept at once until the watch shows their claim, and from one site.
const GIVE_BACKS_KEPT: usize = 1024;
const GIVE_BACKS_KEPT_PER_SITE: usize = GIVE_BACKS_KEPT / 4;

/// Nobody will fetch `parked`, claimed by this edge as `by` (`<this edge>/<retriever>`): put
/// it back into its slot.
pub(crate) fn give_back(edge: &mut Parking, now: Instant, parked: &Parked, by: &str) {
    if parked.call.edge == edge.id {
        // Ours: a new park, which the call takes as its own (`adopt_repark`).
        let cmd = Command::Park {
            lot: parked.lot.clone(),
            slot: Some(parked.slot),
            call: parked.call.clone(),
        };
        edge.propose(now, cmd, Then::Nothing);
        return;
    }
    let holder = parked.call.edge.clone();
    let Some(to) = crate::trunk::peer_addr(edge, &holder).map(|p| p.addr()) else {
        warn!(park = parked.id, %holder, "no trunk to the holding site: its fetch wait puts the call back");
        return;
    };
    let slot = parked.slot.to_string();
    let body = parked.id.to_string().into_bytes();
    let (tag, call_id) = (edge.ids.tag(), edge.ids.call_id("orbit-give-back"));
    // From the retriever; the holder adds this edge's site, as the signature vouches for it.
    let user = by.rsplit_once('/').map_or(by, |(_, u)| u);
    let from = format!("<sip:{user}@{}>;tag={tag}", edge.cfg.tenant.domain);
    let branch = edge.new_branch();
    let mut w = Writer::request("MESSAGE", &format!("sip:{slot}@{to}"));
    w.header("Via", &edge.local.via(Proto::Udp, &branch.branch));
    w.header("Max-Forwards", "70");
    w.header("From", &from);
    w.header("To", &format!("<sip:{slot}@{to}>"));
    w.header("Call-ID", &call_id);
    w.header("CSeq", "1 MESSAGE");
    let claim = Some(Claim::Park(parked.id, 0));
    let signed = crate::trunk::headers(
        edge, "MESSAGE", &holder, &call_id, &from, &slot, claim, &body,
    );
    for (k, v) in &signed {
        w.header(k, v);
    }
    let bytes = w.finish(Some(GIVE_BACK_TYPE), &body);
    info!(park = parked.id, %holder, %by, "giving a claimed call back to the site holding it");
    let flow = Flow {
        proto: Proto::Udp,
        addr: to,
        conn: 0,
    };
    edge.send_request(now, flow, branch, false, bytes, Owner::Nobody);
}

/// Site `site`'s edge gives back park `park`, held here, which it claimed for its retriever
/// (the From's user): park it again now, if this edge's replica shows that claim made by
/// that site for that retriever; keep it until then if the replica shows no claim yet.
pub(crate) fn on_give_back(
    edge: &mut Parking,
    now: Instant,
    key: &ServerKey,
    msg: Message,
    site: &str,
    park: ParkId,
) {
    let user = msg
        .from()
        .and_then(|f| orbit_sip::Uri::parse(f.uri).ok())
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default();
    // The body names the park the signed claim header does (the body is signed, its type
    // is not).
    if user.contains('/') || msg.body.as_ref() != park.to_string().as_bytes() {
        return edge.reply(now, key, Response::to(&msg, 400));
    }
    match edge.handover.claimed_by(park) {
        Some(by) if crate::park::claimed_by(by, site, &user) => {}
        Some(_) => {
            warn!(park, %site, %user, "give-back of a call claimed by someone else: refused");
            let r = Response::to(&msg, 403).reason("Not The Claimant");
            return edge.reply(now, key, r);
        }
        None if edge.park.by_id.contains_key(&park) => {
            // The claimant's watch is ahead of ours: kept until the claim shows (checked
            // then, by whom), for a lease's length; bounded as the claims waiting are.
            let g = &mut edge.handover.given_back;
            let from_site = g.values().filter(|(s, _, _)| s == site).count();
            if (g.len() >= GIVE_BACKS_KEPT || from_site >= GIVE_BACKS_KEPT_PER_SITE)
                && !g.contains_key(&park)
            {
                let r = Response::to(&msg, 503).header("Retry-After", "1");
                return edge.reply(now, key, r);
            }
            g.insert(park, (site.to_string(), user, now));
            return edge.reply(now, key, Response::to(&msg, 202));
        }
        None => {
            let r = Response::to(&msg, 404).reason("Park Not Held Here");
            return edge.reply(now, key, r);
        }
    }
    edge.reply(now, key, Response::to(&msg, 200));
    info!(park, %site, by = %user, "claimed call given back: parking it again");
    crate::park::put_back(edge, now, park);
}
