//! The inter-site trunk: SIP between the sites' edges.
//!
//! An edge reaches another site's phones, and the calls another site holds parked, by sending
//! the INVITE to that site's edge. Each such INVITE carries `X-Orbit-Trunk: <site>;<unix
//! seconds>;<hex HMAC-SHA256>` over the sending site, the time, the Call-ID, the Request-URI's
//! user and the claimed park, made with the secret all sites share; the receiving edge takes
//! the caller as authenticated by the sending site. A retrieve adds `X-Orbit-Claim: <park id>`:
//! the sending edge has won that claim in the registry, and the holding edge gives it the call.
//!
//! ```text
//! phone 2001 ─INVITE 701─▶ edge B ─Claim─▶ registry: Claimed(park 7, held at site-a)
//!                          edge B ─INVITE 701, X-Orbit-Claim: 7─▶ edge A ─▶ vacant side of the parked call
//! media: caller ⇄ relay A ⇄ relay B ⇄ phone 2001
//! ```

use std::time::Instant;

use hmac::{Hmac, Mac};
use orbit_sip::message::Message;
use orbit_sip::transport::{Flow, Proto};
use orbit_state::{ParkId, Parked};
use sha2::Sha256;
use tracing::{info, warn};

use crate::call::{NewCall, Target};
use orbit_sip::build::Response;
use orbit_sip::key::ServerKey;

use crate::core::Edge;
use crate::park::AfterClaim;

const TRUNK: &str = "X-Orbit-Trunk";
const CLAIM: &str = "X-Orbit-Claim";

/// The HMAC over what a trunk request's signature covers, before finalising.
fn mac_of(
    secret: &str,
    site: &str,
    ts: u64,
    call_id: &str,
    user: &str,
    claim: Option<ParkId>,
) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    let claim = claim.map(|c| c.to_string()).unwrap_or_default();
    for part in [site, &ts.to_string(), call_id, user, &claim] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    m
}

/// The signature, hex.
pub(crate) fn mac(
    secret: &str,
    site: &str,
    ts: u64,
    call_id: &str,
    user: &str,
    claim: Option<ParkId>,
) -> String {
    hex::encode(
        mac_of(secret, site, ts, call_id, user, claim)
            .finalize()
            .into_bytes(),
    )
}

/// The headers that sign an INVITE to another site's edge.
pub(crate) fn headers(
    edge: &Edge,
    call_id: &str,
    user: &str,
    claim: Option<ParkId>,
) -> Vec<(&'static str, String)> {
    let Some(t) = &edge.cfg.trunk else {
        return vec![];
    };
    let ts = edge.now_ms(edge.last_now) / 1000;
    let site = &edge.cfg.site;
    let sig = mac(&t.secret, site, ts, call_id, user, claim);
    let mut h = vec![(TRUNK, format!("{site};{ts};{sig}"))];
    if let Some(c) = claim {
        h.push((CLAIM, c.to_string()));
    }
    h
}

/// The park a trunk INVITE claims.
pub(crate) fn claim_of(msg: &Message) -> Option<ParkId> {
    msg.header_other(CLAIM)?.trim().parse().ok()
}

/// Whether `msg` comes from another site's edge: `Ok(None)` when it carries no trunk
/// signature, the peer's site when it carries a good one, the reason phrase of a 403 else.
pub(crate) fn verify(edge: &Edge, msg: &Message) -> Result<Option<String>, &'static str> {
    let Some(v) = msg.header_other(TRUNK) else {
        return Ok(None);
    };
    let Some(t) = &edge.cfg.trunk else {
        return Err("No Trunk Here");
    };
    let mut parts = v.trim().splitn(3, ';');
    let (Some(site), Some(ts), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("Bad Trunk Signature");
    };
    let Ok(ts) = ts.parse::<u64>() else {
        return Err("Bad Trunk Signature");
    };
    if !t.peers.iter().any(|p| p.site == site) {
        return Err("Unknown Site");
    }
    let now = edge.now_ms(edge.last_now) / 1000;
    if now.abs_diff(ts) > t.max_skew_secs {
        return Err("Stale Trunk Signature");
    }
    let user = msg
        .uri()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default();
    // `verify_slice` compares in constant time (the signature is a secret's function).
    let ok = hex::decode(sig).is_ok_and(|sig| {
        mac_of(&t.secret, site, ts, msg.call_id(), &user, claim_of(msg))
            .verify_slice(&sig)
            .is_ok()
    });
    if ok {
        Ok(Some(site.to_string()))
    } else {
        Err("Bad Trunk Signature")
    }
}

/// Another site's edge, as a fork target for `user`.
fn peer_target(edge: &Edge, site: &str, user: &str, claim: Option<ParkId>) -> Option<Target> {
    let p = edge
        .cfg
        .trunk
        .as_ref()?
        .peers
        .iter()
        .find(|p| p.site == site)?;
    Some(Target {
        flow: Flow {
            proto: Proto::Udp,
            addr: p.addr,
            conn: 0,
        },
        uri: format!("sip:{user}@{}", p.addr),
        trunk: Some((site.to_string(), claim)),
    })
}

/// The other sites where extension `ext` has phones registered now (as the registry's state
/// here shows), as fork targets for Request-URI user `user`.
pub(crate) fn targets_for(edge: &Edge, now: Instant, ext: &str, user: &str) -> Vec<Target> {
    let now_ms = edge.now_ms(now);
    edge.orbit
        .located(&edge.cfg.tenant.domain, ext, now_ms)
        .into_iter()
        .filter(|site| *site != edge.cfg.site)
        .filter_map(|site| peer_target(edge, site, user, None))
        .collect()
}

/// This edge won the claim of a call another site holds: call that site's edge for it, and
/// bridge the retriever to that leg (media through both relays).
pub(crate) fn retrieve_remote(edge: &mut Edge, now: Instant, a: AfterClaim, parked: Parked) {
    let site = parked.call.edge.clone();
    let slot = parked.slot.to_string();
    let Some(t) = peer_target(edge, &site, &slot, Some(parked.id)) else {
        warn!(%site, slot = parked.slot, "claimed a call held at a site with no trunk to it");
        let bytes = Response::to(&a.msg, 502)
            .reason("No Trunk To Site")
            .encode(a.flow.addr);
        return edge.reply_bytes(now, &a.key, 502, bytes);
    };
    info!(%site, slot = parked.slot, park = parked.id, "retrieving over the trunk");
    let nc = NewCall {
        caller: a.retriever,
        callee: slot,
        display: None,
        max_forwards: 70,
    };
    edge.start_call(now, &a.key, a.flow, a.msg, nc, vec![t]);
}

/// A trunk INVITE claiming park `park` of a call this edge holds: the claim was won in the
/// registry by the sending edge; give it the call, unless this edge's lease lapsed (the
/// registry gave the call up, and the slot may be someone else's by now).
pub(crate) fn on_claim(
    edge: &mut Edge,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
    caller: String,
    park: ParkId,
) {
    let held = edge
        .parks
        .get(&park)
        .copied()
        .filter(|cid| edge.calls.get(cid).is_some_and(|c| c.park.is_some()));
    let Some(cid) = held else {
        let bytes = Response::to(&msg, 404)
            .reason("Park Not Held Here")
            .encode(flow.addr);
        return edge.reply_bytes(now, key, 404, bytes);
    };
    if !edge.lease_holds(now) {
        warn!(park, "claim refused: our lease is not known to hold");
        let bytes = Response::to(&msg, 410)
            .reason("Park Lease Lapsed")
            .encode(flow.addr);
        return edge.reply_bytes(now, key, 410, bytes);
    }
    let slot = edge.calls[&cid].park.as_ref().map(|p| p.slot).unwrap_or(0);
    let a = AfterClaim {
        key: key.clone(),
        flow,
        msg,
        retriever: caller,
        slot,
    };
    crate::park::take_parked(edge, now, &a, cid);
}
