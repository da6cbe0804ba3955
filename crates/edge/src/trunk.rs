//! The inter-site trunk: SIP between the sites' edges.
//!
//! An edge reaches another site's phones, and the calls another site holds parked, by sending
//! the INVITE to that site's edge. Each such INVITE carries `X-Orbit-Trunk: <site>;<unix
//! seconds>;<hex HMAC-SHA256>` made with the secret all sites share, over the sending and the
//! receiving site, the time, the method, the Call-ID, the From header, the Request-URI's user,
//! the claimed park and a hash of the body: none of them can be changed in transit, and the
//! signature is good for one site only. The receiving edge takes the caller as authenticated
//! by the sending site. A retrieve adds `X-Orbit-Claim: <park id>`: the sending edge has won
//! that claim in the registry, and the holding edge gives it the call.
//!
//! What the receiving edge checks, in order: the sender's address is a configured peer's; the
//! signature is fresh (within the clock skew), for this site, right, and not seen before (a
//! replay cache over the skew window); and for a claim, that its own replica of the registry
//! shows that claim, made by that caller (waiting briefly for the watch to catch up).
//!
//! ```text
//! phone 2001 ─INVITE 701─▶ edge B ─Claim─▶ registry: Claimed(park 7, held at site-a)
//!                          edge B ─INVITE 701, X-Orbit-Claim: 7─▶ edge A ─▶ vacant side of the parked call
//! media: caller ⇄ relay A ⇄ relay B ⇄ phone 2001
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use orbit_sip::build::Response;
use orbit_sip::key::ServerKey;
use orbit_sip::message::{Message, Name};
use orbit_sip::transport::{Flow, Proto};
use orbit_state::{ParkId, Parked};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::call::{NewCall, Target};
use crate::core::{Edge, TimerKey};
use crate::park::AfterClaim;

const TRUNK: &str = "X-Orbit-Trunk";
const CLAIM: &str = "X-Orbit-Claim";

/// Signatures remembered at once (a peer sending more than this within the skew window is
/// refused for a while, never let through unchecked).
const REPLAYS_KEPT: usize = 65_536;
/// Trunk claims waiting for the replica to show their claim, at once.
const CLAIMS_WAITING: usize = 1024;
/// How long a trunk claim waits for the replica (the watch is a commit behind at most).
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How long a call held here, claimed by another site, waits for that site's trunk INVITE
/// before it goes back to its slot (the claimant's edge is gone, cut off, or its retriever
/// cancelled while its INVITE was on the way). The INVITE normally comes a round trip after
/// the commit.
pub(crate) const FETCH_WAIT: Duration = Duration::from_secs(10);
/// How soon parking an unfetched call again is retried when the registry was out of reach.
const REPARK_RETRY: Duration = Duration::from_secs(2);

/// What a trunk request's signature covers.
pub(crate) struct Signed<'a> {
    pub site: &'a str,
    pub to_site: &'a str,
    pub ts: u64,
    pub method: &'a str,
    pub call_id: &'a str,
    pub from: &'a str,
    pub user: &'a str,
    pub claim: Option<ParkId>,
    pub body: &'a [u8],
}

impl Signed<'_> {
    fn mac(&self, secret: &str) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
        let claim = self.claim.map(|c| c.to_string()).unwrap_or_default();
        let body = hex::encode(Sha256::digest(self.body));
        let ts = self.ts.to_string();
        for part in [
            self.site,
            self.to_site,
            &ts,
            self.method,
            self.call_id,
            self.from,
            self.user,
            &claim,
            &body,
        ] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        m
    }

    /// The signature, hex.
    pub(crate) fn sign(&self, secret: &str) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }
}

/// The trunk's own tables: signatures seen (replay cache), claims the replica has shown for
/// calls held here, and trunk claims waiting for the replica.
#[derive(Default)]
pub(crate) struct TrunkState {
    seen: HashMap<Vec<u8>, u64>,
    /// (expiry in unix seconds, signature), in arrival order.
    order: VecDeque<(u64, Vec<u8>)>,
    /// Park → who claimed it and what was parked, for calls held here whose claim the watch
    /// has shown and that have not been fetched yet.
    claimed: HashMap<ParkId, (String, Parked)>,
    waiting: HashMap<ParkId, TrunkClaim>,
}

/// A trunk INVITE from another site's edge claiming park `park` for `caller`.
pub(crate) struct TrunkClaim {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    pub caller: String,
    pub park: ParkId,
}

impl TrunkState {
    /// Remember a signature until `until`; false if it was seen already or the cache is full
    /// of unexpired ones.
    fn first_use(&mut self, sig: &[u8], now_s: u64, until: u64) -> Result<(), &'static str> {
        while let Some((exp, s)) = self.order.front() {
            if *exp >= now_s {
                break;
            }
            self.seen.remove(s);
            self.order.pop_front();
        }
        if self.seen.contains_key(sig) {
            return Err("Replayed Trunk Request");
        }
        if self.seen.len() >= REPLAYS_KEPT {
            return Err("Trunk Busy");
        }
        self.seen.insert(sig.to_vec(), until);
        self.order.push_back((until, sig.to_vec()));
        Ok(())
    }

    /// A call held here was claimed (the watch showed it).
    /// A trunk claim of it still waiting for the replica, if any, for its caller to answer.
    pub(crate) fn forget(&mut self, park: ParkId) -> Option<TrunkClaim> {
        self.claimed.remove(&park);
        self.waiting.remove(&park)
    }
}

/// The headers that sign an INVITE to site `to_site`'s edge.
pub(crate) fn headers(
    edge: &Edge,
    to_site: &str,
    call_id: &str,
    from: &str,
    user: &str,
    claim: Option<ParkId>,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let Some(t) = &edge.cfg.trunk else {
        return vec![];
    };
    let ts = edge.now_ms(edge.last_now) / 1000;
    let site = &edge.cfg.site;
    let sig = Signed {
        site,
        to_site,
        ts,
        method: "INVITE",
        call_id,
        from,
        user,
        claim,
        body,
    }
    .sign(&t.secret);
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

/// Whether `msg`, which came over `flow`, comes from another site's edge: `Ok(None)` when it
/// carries no trunk signature, the peer's site when it carries a good one, the reason phrase
/// of a 403 else.
pub(crate) fn verify(
    edge: &mut Edge,
    flow: &Flow,
    msg: &Message,
) -> Result<Option<String>, &'static str> {
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
    let Some(peer) = t.peers.iter().find(|p| p.site == site) else {
        return Err("Unknown Site");
    };
    // Only from the peer's own address: a signature copied elsewhere is worth nothing.
    if peer.addr.ip().to_canonical() != flow.addr.ip().to_canonical() {
        return Err("Not From That Site");
    }
    let now = edge.now_ms(edge.last_now) / 1000;
    if now.abs_diff(ts) > t.max_skew_secs {
        return Err("Stale Trunk Signature");
    }
    let user = msg
        .uri()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default();
    let Ok(sig) = hex::decode(sig) else {
        return Err("Bad Trunk Signature");
    };
    let signed = Signed {
        site,
        to_site: &edge.cfg.site,
        ts,
        method: msg.method().as_str(),
        call_id: msg.call_id(),
        from: msg.header(Name::From).unwrap_or(""),
        user: &user,
        claim: claim_of(msg),
        body: &msg.body,
    };
    // `verify_slice` compares in constant time (the signature is a secret's function).
    if signed.mac(&t.secret).verify_slice(&sig).is_err() {
        return Err("Bad Trunk Signature");
    }
    let site = site.to_string();
    let until = ts + t.max_skew_secs;
    edge.trunk
        .first_use(&sig, now.saturating_sub(t.max_skew_secs), until)?;
    Ok(Some(site))
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
        let r = Response::to(&a.msg, 502).reason("No Trunk To Site");
        return edge.reply(now, &a.key, r);
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

/// A claim of a call held here was committed (the watch shows it): remember who made it, and
/// hand the call over if that site's trunk INVITE is already waiting; if none comes within
/// [`FETCH_WAIT`], the call goes back to its slot ([`on_fetch_timeout`]).
pub(crate) fn on_claimed(edge: &mut Edge, now: Instant, parked: &Parked, by: &str) {
    let park = parked.id;
    if !edge.park.by_id.contains_key(&park) {
        return;
    }
    edge.trunk
        .claimed
        .insert(park, (by.to_string(), parked.clone()));
    edge.timers
        .schedule(now + FETCH_WAIT, TimerKey::TrunkFetch(park));
    if let Some(c) = edge.trunk.waiting.remove(&park) {
        on_claim(edge, now, c);
    }
}

/// A call held here was claimed by another site, and that site never came for it: park it
/// again, in its slot if that is still free (a new park with a fresh timer, which this edge
/// takes as its own: [`crate::park::adopt_repark`]), so that it is not left on music forever.
pub(crate) fn on_fetch_timeout(edge: &mut Edge, now: Instant, park: ParkId) {
    let Some((by, parked)) = edge.trunk.claimed.remove(&park) else {
        return; // fetched, ended or lost meanwhile
    };
    if !edge.park.by_id.contains_key(&park) {
        return;
    }
    edge.trunk.waiting.remove(&park);
    warn!(park, slot = parked.slot, %by, "claimed call never fetched over the trunk: parking it again");
    repark(edge, now, parked, true);
}

/// Park `parked`'s call again: in its own slot if `same_slot` and it is free, else in any.
fn repark(edge: &mut Edge, now: Instant, parked: Parked, same_slot: bool) {
    let free = same_slot
        && edge
            .orbit
            .in_slot(&parked.lot.tenant, parked.slot)
            .is_none();
    let cmd = orbit_state::Command::Park {
        lot: parked.lot.clone(),
        slot: free.then_some(parked.slot),
        call: parked.call.clone(),
    };
    edge.propose(now, cmd, crate::orbit::Then::Repark(parked));
}

/// The outcome of parking an unfetched call again. Its slot taken meanwhile (another call, or
/// another unfetched claim of the same slot put back first): any free slot. The registry out
/// of reach: again shortly. The lot full, or anything else: the call cannot be held for
/// anyone, and the caller is hung up rather than left on music that no slot shows.
pub(crate) fn repark_outcome(
    edge: &mut Edge,
    now: Instant,
    parked: Parked,
    outcome: crate::orbit::Outcome,
) {
    use crate::orbit::OrbitError;
    use orbit_state::Rejection;
    let Some(&cid) = edge.park.by_id.get(&parked.id) else {
        return; // adopted by the new park, or ended meanwhile
    };
    match outcome {
        Ok(_) => {}
        Err(OrbitError::Rejected(Rejection::SlotTaken(_))) => repark(edge, now, parked, false),
        Err(OrbitError::Unavailable(e)) => {
            info!(park = parked.id, error = %e, "parking an unfetched call again: retrying");
            edge.trunk
                .claimed
                .insert(parked.id, (String::new(), parked.clone()));
            edge.timers
                .schedule(now + REPARK_RETRY, TimerKey::TrunkFetch(parked.id));
        }
        Err(e) => {
            warn!(park = parked.id, slot = parked.slot, error = %e, "an unfetched call cannot be parked again: hanging up");
            crate::call::hangup(edge, now, cid, "claimed, never fetched, not parkable");
        }
    }
}

/// The claimant cancelled its trunk INVITE while it waited for the replica: 487 to it; the
/// call stays here and goes back to its slot when the fetch wait ends.
pub(crate) fn cancel_waiting(edge: &mut Edge, now: Instant, invite: &ServerKey) -> bool {
    let Some(park) = edge
        .trunk
        .waiting
        .iter()
        .find(|(_, w)| w.key == *invite)
        .map(|(p, _)| *p)
    else {
        return false;
    };
    let w = edge.trunk.waiting.remove(&park).expect("found");
    edge.reply(now, &w.key, Response::to(&w.msg, 487));
    true
}

/// A trunk claim waited in vain for the replica to show its claim.
pub(crate) fn on_claim_timeout(edge: &mut Edge, now: Instant, park: ParkId) {
    if let Some(w) = edge.trunk.waiting.remove(&park) {
        warn!(park, caller = %w.caller, "trunk claim not shown by the registry: refused");
        let r = Response::to(&w.msg, 404).reason("Claim Not Committed");
        edge.reply(now, &w.key, r);
    }
}

/// Hold a trunk claim until this edge's watch shows it ([`on_claimed`]), for [`CLAIM_WAIT`]
/// at most ([`on_claim_timeout`]).
fn wait_for_replica(edge: &mut Edge, now: Instant, c: TrunkClaim) {
    let w = &edge.trunk.waiting;
    if w.len() >= CLAIMS_WAITING || w.contains_key(&c.park) {
        return edge.reply(
            now,
            &c.key,
            Response::to(&c.msg, 503).header("Retry-After", "1"),
        );
    }
    edge.reply(now, &c.key, Response::to(&c.msg, 100));
    edge.timers
        .schedule(now + CLAIM_WAIT, TimerKey::TrunkClaim(c.park));
    edge.trunk.waiting.insert(c.park, c);
}

/// A trunk INVITE claiming park `park` of a call this edge holds: the claim was won in the
/// registry by the sending edge. Give it the call once this edge's replica shows that claim
/// by `caller` (waiting up to [`CLAIM_WAIT`] for the watch), unless this edge's lease lapsed
/// (the registry gave the call up, and the slot may be someone else's by now).
pub(crate) fn on_claim(edge: &mut Edge, now: Instant, c: TrunkClaim) {
    let park = c.park;
    let held = edge
        .park
        .by_id
        .get(&park)
        .copied()
        .filter(|cid| edge.park.held.contains_key(cid));
    let Some(cid) = held else {
        if edge.orbit.is_future(park) {
            // Not in this edge's replica yet (a park it made itself, put back after an
            // unfetched claim, whose entry the watch has not brought): wait for it as for a
            // claim not shown yet.
            return wait_for_replica(edge, now, c);
        }
        let r = Response::to(&c.msg, 404).reason("Park Not Held Here");
        return edge.reply(now, &c.key, r);
    };
    if !edge.lease_holds(now) {
        warn!(park, "claim refused: our lease is not known to hold");
        let r = Response::to(&c.msg, 410).reason("Park Lease Lapsed");
        return edge.reply(now, &c.key, r);
    }
    match edge.trunk.claimed.get(&park).map(|(by, _)| by) {
        Some(by) if *by == c.caller => {}
        Some(by) => {
            warn!(park, %by, caller = %c.caller, "trunk claim by someone else than the registry says");
            let r = Response::to(&c.msg, 403).reason("Not The Claimant");
            return edge.reply(now, &c.key, r);
        }
        // The registry answered the claimant before our watch brought the entry: wait.
        None => return wait_for_replica(edge, now, c),
    }
    let slot = edge.park.held.get(&cid).map(|p| p.slot).unwrap_or(0);
    let a = AfterClaim {
        key: c.key,
        flow: c.flow,
        msg: c.msg,
        retriever: c.caller,
        slot,
    };
    crate::park::take_parked(edge, now, &a, cid);
}
