//! The trunk: SIP between edges, of other sites or of this one.
//!
//! An edge reaches phones registered with another edge, and the calls another edge holds
//! parked, by sending the INVITE to that edge. Each such INVITE carries `X-Orbit-Trunk:
//! <edge>;<unix seconds>;<hex HMAC-SHA256>` made with the secret all edges share, over the
//! sending and the receiving edge's identity (`site` or `site/name`), the time, the method,
//! the Call-ID, the From header, the Request-URI's user, the claimed park and a hash of the
//! body: none of them can be changed in transit, and the signature is good for one edge only.
//! Where an edge is comes from config (`[[edge.trunk.peers]]`) or else from the lease it holds
//! in the registry, so that edges can be added without changing anyone's config. The receiving edge takes the caller as authenticated
//! by the sending site. A retrieve adds `X-Orbit-Claim: <park id>` and `X-Orbit-Claim-Index:
//! <log index>`: the sending edge has won that claim in the registry, at that entry of its
//! log, and the holding edge gives it the call.
//!
//! What the receiving edge checks, in order: the sender's address is that edge's; the
//! signature is fresh (within the clock skew), for this site, right, and not seen before (a
//! replay cache over the skew window); and for a claim, that its own replica of the registry
//! shows that claim, made by that caller (waiting for the watch to get to the claim's entry:
//! that part, handing a held call over, is park's, in `park/handover.rs`).
//!
//! ```text
//! phone 2001 ─INVITE 701─▶ edge B ─Claim─▶ registry: Claimed(park 7, held at site-a)
//!                          edge B ─INVITE 701, X-Orbit-Claim: 7 (index 1204)─▶ edge A ─▶ vacant side of the parked call
//! media: caller ⇄ relay A ⇄ relay B ⇄ phone 2001
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use hmac::{Hmac, Mac};
use orbit_sip::message::{Message, Name};
use orbit_sip::transport::{Flow, Proto};

use sha2::{Digest, Sha256};

use crate::location::Target;
pub(crate) use crate::location::{Claim, Peer};
use crate::services::Services;

const TRUNK: &str = "X-Orbit-Trunk";
const CLAIM: &str = "X-Orbit-Claim";
/// The log index a claim was committed at. Not signed: it only says how long the holding edge
/// waits for its replica (a lease at most), and whoever could change it in transit could as
/// well drop the request.
const CLAIM_INDEX: &str = "X-Orbit-Claim-Index";

/// Signatures remembered at once (a peer sending more than this within the skew window is
/// refused for a while, never let through unchecked).
const REPLAYS_KEPT: usize = 65_536;

/// What a trunk request's signature covers.
pub(crate) struct Signed<'a> {
    pub site: &'a str,
    pub to_site: &'a str,
    pub ts: u64,
    pub method: &'a str,
    pub call_id: &'a str,
    pub from: &'a str,
    pub user: &'a str,
    pub claim: Option<Claim>,
    pub body: &'a [u8],
}

impl Signed<'_> {
    fn mac(&self, secret: &str) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
        let claim = self.claim.map(Claim::text).unwrap_or_default();
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

/// Trunk signatures seen (the replay cache).
#[derive(Default)]
pub(crate) struct Replays {
    seen: HashMap<Vec<u8>, u64>,
    /// (expiry in unix seconds, signature), in arrival order.
    order: VecDeque<(u64, Vec<u8>)>,
}

impl Replays {
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
}

/// The headers that sign a `method` request (an INVITE; a parked call's handover) to edge
/// `to_site`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn headers(
    edge: &Services,
    method: &str,
    to_site: &str,
    call_id: &str,
    from: &str,
    user: &str,
    claim: Option<Claim>,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let Some(t) = &edge.cfg.trunk else {
        return vec![];
    };
    let ts = edge.now_ms(edge.last_now) / 1000;
    let site = &edge.id;
    let sig = Signed {
        site,
        to_site,
        ts,
        method,
        call_id,
        from,
        user,
        claim,
        body,
    }
    .sign(&t.secret);
    let mut h = vec![(TRUNK, format!("{site};{ts};{sig}"))];
    if let Some(c) = claim {
        h.push((CLAIM, c.text()));
        if c.at() > 0 {
            h.push((CLAIM_INDEX, c.at().to_string()));
        }
    }
    // The trace the request is part of (a retrieve's, a pickup's), when one is recorded. Not
    // signed: it decides nothing, and is read only once the signature is good.
    if let Some(tp) = orbit_trace::traceparent() {
        h.push((orbit_trace::TRACEPARENT, tp));
    }
    h
}

/// A span for the handling of a request whose trunk signature was good: in the sending
/// edge's trace when it carried one.
pub(crate) fn span(msg: &Message, from: &str) -> tracing::Span {
    orbit_trace::continuing(
        msg.header_other(orbit_trace::TRACEPARENT).map(str::trim),
        || tracing::info_span!("trunk.request", from = %from),
    )
}

/// What a trunk INVITE claims, and at which log index (0: not said).
pub(crate) fn claim_of(msg: &Message) -> Option<Claim> {
    let at = msg
        .header_other(CLAIM_INDEX)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Claim::parse(msg.header_other(CLAIM)?.trim(), at)
}

/// Whether `msg`, which came over `flow`, comes from another site's edge: `Ok(None)` when it
/// carries no trunk signature, the peer's site when it carries a good one, the reason phrase
/// of a 403 else.
pub(crate) fn verify(
    edge: &Services,
    replays: &mut Replays,
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
    let Some(peer) = peer_addr(edge, site) else {
        return Err("Unknown Site");
    };
    // Only from the peer's own address: a signature copied elsewhere is worth nothing.
    if !peer.sent(flow.addr) {
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
        to_site: &edge.id,
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
    replays.first_use(&sig, now.saturating_sub(t.max_skew_secs), until)?;
    Ok(Some(site))
}

/// Where edge `id` takes trunk requests: its `[[edge.trunk.peers]]` entry, else the address
/// its live lease gave (never this edge's own).
pub(crate) fn peer_addr(edge: &Services, id: &str) -> Option<Peer> {
    let t = edge.cfg.trunk.as_ref()?;
    if id == edge.id {
        return None;
    }
    match t.peers.iter().find(|p| p.id() == id) {
        Some(p) => Some(Peer::Configured(p.addr)),
        None => edge
            .orbit
            .trunk_of(id, edge.now_ms(edge.last_now))
            .map(Peer::Leased),
    }
}

/// Another edge, as a fork target for `user`.
pub(crate) fn peer_target(
    edge: &Services,
    site: &str,
    user: &str,
    claim: Option<Claim>,
) -> Option<Target> {
    let addr = peer_addr(edge, site)?.addr();
    Some(Target {
        flow: Flow {
            proto: Proto::Udp,
            addr,
            conn: 0,
        },
        uri: format!("sip:{user}@{addr}"),
        trunk: Some((site.to_string(), claim)),
    })
}

/// The other edges where extension `ext` has phones registered now (as the registry's state
/// here shows), as fork targets for Request-URI user `user`.
pub(crate) fn targets_for(edge: &Services, now: Instant, ext: &str, user: &str) -> Vec<Target> {
    let now_ms = edge.now_ms(now);
    edge.orbit
        .located(&edge.cfg.tenant.domain, ext, now_ms)
        .into_iter()
        .filter(|site| *site != edge.id)
        .filter_map(|site| peer_target(edge, site, user, None))
        .collect()
}
