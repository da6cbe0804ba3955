//! Digest authentication (RFC 3261 §22, RFC 8760 for SHA-256, RFC 7616 for the nonce rules):
//! the [`Authenticator`] that challenges requests and checks their credentials, and [`answer`]
//! for answering a challenge.
//!
//! Nonces are self-validating and bound to the source they were issued to, so issuing one
//! stores nothing (minted and recognised in `auth/nonce.rs`). A nonce older than the TTL is
//! answered with a new challenge carrying `stale=true`, so the phone retries without asking its
//! user. Replay protection: each nonce's highest nonce-count seen is remembered until the nonce
//! expires, and a request that does not raise it is refused.
//!
//! Only what was offered is accepted: an algorithm from the configured list (a response without
//! `algorithm` is MD5, so only if MD5 is offered), `qop=auth` (no RFC 2069 responses), and a
//! digest `uri` equal to the Request-URI (compared as text after trimming, not by the URI
//! equality rules of RFC 3261 §19.1.4: phones copy the Request-URI). The response is compared
//! in constant time.
//!
//! Guessing is slowed by counting wrong digests and locking out (`auth/lockout.rs`); while
//! locked, attempts are refused without checking the password (`Verdict::Locked`). The tests
//! are in `auth/tests.rs`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use md5::Md5;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, Extension};

mod lockout;
mod nonce;

use lockout::{source_key, Lru, Policy, Strikes, GOOD_TTL, STRIKES_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    pub fn hash(self, parts: &[&str]) -> String {
        fn go<D: Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex::encode(d.finalize())
        }
        match self {
            Algorithm::Md5 => go::<Md5>(parts),
            Algorithm::Sha256 => go::<Sha256>(parts),
        }
    }
}

/// What a client needs to answer a challenge (also what the edge will need when a peer
/// challenges it).
pub struct Credentials<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    /// Nonce count (1 for a nonce's first use) and client nonce.
    pub nc: u32,
    pub cnonce: &'a str,
}

/// The `Authorization` value answering `challenge` (a `WWW-Authenticate`/`Proxy-Authenticate`
/// value) with qop=auth; `None` when the challenge is not a Digest one we can answer.
pub fn answer(challenge: &str, c: &Credentials<'_>) -> Option<String> {
    let mut realm = None;
    let mut nonce = None;
    let mut alg = Algorithm::Md5;
    for (k, v) in orbit_sip::header::digest_params(challenge)? {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "algorithm" => alg = Algorithm::parse(v)?,
            _ => {}
        }
    }
    let (realm, nonce) = (realm?, nonce?);
    let nc = format!("{:08x}", c.nc);
    let ha1 = alg.hash(&[c.user, realm, c.password]);
    let ha2 = alg.hash(&[c.method, c.uri]);
    let response = alg.hash(&[&ha1, nonce, &nc, c.cnonce, "auth", &ha2]);
    Some(format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"{}\"",
        c.user,
        c.uri,
        alg.name(),
        c.cnonce
    ))
}

/// The outcome of checking an Authorization header.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok {
        user: String,
    },
    /// No credentials for our realm: challenge.
    Challenge,
    /// Right credentials on an expired nonce: challenge with stale=true.
    Stale,
    /// Wrong password, unknown user, replayed nonce-count, malformed: 403 (after a challenge).
    Denied(&'static str),
    /// Too many failures lately for this source, extension or both: refused (403) without
    /// checking the password until the lockout ends.
    Locked,
}

/// The request being authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub method: &'a str,
    /// The Request-URI as written: the digest's `uri` must be the same.
    pub request_uri: &'a str,
    /// Where the request came from, for counting failures.
    pub source: IpAddr,
}

/// Whether two hex digests are the same value, in time independent of where they differ.
fn same_digest(expected: &str, response: &str) -> bool {
    let (Ok(a), Ok(b)) = (hex::decode(expected), hex::decode(response)) else {
        return false;
    };
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(&b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub struct Authenticator {
    key: [u8; 32],
    /// The random part of nonces.
    rng: StdRng,
    realm: String,
    algorithms: Vec<Algorithm>,
    ttl: Duration,
    epoch: Instant,
    /// nonce id → (highest nc seen, issue time), for nonces used at least once.
    seen: HashMap<u64, (u32, Instant)>,
    /// The same ids in first-use order, for expiry and eviction from the front.
    order: VecDeque<(Instant, u64)>,
    /// Nonces issued at or before this time may have been evicted: if one is not in `seen`
    /// it is treated as stale (a new challenge), never as unused.
    floor: Option<Instant>,
    last_prune: Instant,
    policy: Policy,
    /// Failures per (source, user id), per source, per user id (known extensions only).
    /// User ids are keyed hashes of the username, so that an attacker's long names cost no
    /// memory.
    by_pair: Lru<(IpAddr, u64), Strikes>,
    by_source: Lru<IpAddr, Strikes>,
    by_ext: Lru<u64, Strikes>,
    /// (source, user id) → latest successful authentication there.
    good: Lru<(IpAddr, u64), Instant>,
}

/// Most nonces tracked at once (about 50 bytes each): 1M covers 3,000 authenticated requests/s
/// over a 300 s nonce lifetime. Beyond it the oldest are evicted (see `floor`).
const NC_TABLE_MAX: usize = 1_000_000;

impl Authenticator {
    /// An authenticator drawing its key and nonces from the thread's CSPRNG.
    pub fn new(realm: &str, cfg: &AuthConfig, now: Instant) -> Authenticator {
        Self::with_rng(realm, cfg, now, &mut rand::thread_rng())
    }

    /// An authenticator whose HMAC key, and the seed of the generator for its nonces, come
    /// from `rng` (tests pass a seeded one).
    pub fn with_rng(
        realm: &str,
        cfg: &AuthConfig,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Authenticator {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Authenticator {
            key,
            rng: StdRng::from_seed(seed),
            realm: realm.to_string(),
            algorithms: cfg
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::parse(a))
                .collect(),
            ttl: Duration::from_secs(cfg.nonce_ttl_secs),
            // The epoch sits a day in the past so that issue times never underflow.
            epoch: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
            seen: HashMap::new(),
            order: VecDeque::new(),
            floor: None,
            last_prune: now,
            policy: Policy {
                per_source_ext: cfg.failures_per_source_ext,
                per_source: cfg.failures_per_source,
                per_ext: cfg.failures_per_ext,
                window: Duration::from_secs(cfg.failure_window_secs),
                lockout: Duration::from_secs(cfg.lockout_secs),
                lockout_max: Duration::from_secs(cfg.lockout_max_secs.max(cfg.lockout_secs)),
            },
            by_pair: Lru::new(STRIKES_MAX),
            by_source: Lru::new(STRIKES_MAX),
            by_ext: Lru::new(STRIKES_MAX),
            good: Lru::new(STRIKES_MAX),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Challenge header values, one per configured algorithm, in preference order.
    pub fn challenges(&mut self, now: Instant, stale: bool, source: IpAddr) -> Vec<String> {
        let nonce = self.nonce(now, source);
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    nonce,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Check the credentials in an Authorization / Proxy-Authorization value (`header`) for
    /// `attempt`. `lookup` returns the extension's secrets.
    pub fn verify<'e>(
        &mut self,
        now: Instant,
        attempt: &Attempt<'_>,
        header: Option<&str>,
        lookup: impl Fn(&str) -> Option<&'e Extension>,
    ) -> Verdict {
        self.prune(now);
        let Some(header) = header else {
            return Verdict::Challenge;
        };
        let Some(params) = orbit_sip::header::digest_params(header) else {
            return Verdict::Challenge;
        };
        let mut p: HashMap<String, &str> = HashMap::new();
        for (k, v) in params {
            p.insert(k.to_ascii_lowercase(), v);
        }
        if p.get("realm").copied() != Some(self.realm.as_str()) {
            return Verdict::Challenge;
        }
        let (Some(user), Some(nonce), Some(uri), Some(response)) = (
            p.get("username").copied(),
            p.get("nonce").copied(),
            p.get("uri").copied(),
            p.get("response").copied(),
        ) else {
            return Verdict::Denied("incomplete credentials");
        };
        let source = source_key(attempt.source);
        let uid = self.user_id(user);
        if self.locked_out(now, source, uid) {
            return Verdict::Locked;
        }
        // A missing algorithm means MD5 (RFC 2617 §3.2.2): only if MD5 was offered.
        let alg = match p
            .get("algorithm")
            .map_or(Some(Algorithm::Md5), |a| Algorithm::parse(a))
        {
            Some(a) if self.algorithms.contains(&a) => a,
            _ => return Verdict::Denied("algorithm not offered"),
        };
        let Some(qop) = p.get("qop").copied() else {
            return Verdict::Denied("qop=auth required");
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return Verdict::Denied("unsupported qop");
        }
        let (Some(nc_s), Some(cnonce)) = (p.get("nc").copied(), p.get("cnonce").copied()) else {
            return Verdict::Denied("qop without nc/cnonce");
        };
        let Ok(nc) = u32::from_str_radix(nc_s, 16) else {
            return Verdict::Denied("bad nc");
        };
        if uri.trim() != attempt.request_uri.trim() {
            return Verdict::Denied("uri is not the Request-URI");
        }
        let Some((issued, id)) = self.nonce_issued(nonce, attempt.source) else {
            // Not ours, forged, or issued to another source: a fresh challenge, as for no
            // credentials (and no failure counted).
            return Verdict::Challenge;
        };
        let Some(ext) = lookup(user) else {
            self.fail(now, source, uid, user, false);
            return Verdict::Denied("unknown user");
        };
        let ha1 = match (alg, &ext.password, &ext.ha1_md5, &ext.ha1_sha256) {
            (Algorithm::Md5, _, Some(h), _) => h.to_ascii_lowercase(),
            (Algorithm::Sha256, _, _, Some(h)) => h.to_ascii_lowercase(),
            (_, Some(pw), _, _) => alg.hash(&[user, &self.realm, pw]),
            _ => return Verdict::Denied("no secret for algorithm"),
        };
        let ha2 = alg.hash(&[attempt.method, uri]);
        let expected = alg.hash(&[&ha1, nonce, nc_s, cnonce, qop, &ha2]);
        if !same_digest(&expected, response) {
            self.fail(now, source, uid, user, true);
            return Verdict::Denied("wrong credentials");
        }
        if now.duration_since(issued) > self.ttl {
            return Verdict::Stale;
        }
        match self.seen.get_mut(&id) {
            Some((last, _)) if nc <= *last => return Verdict::Denied("nonce-count replayed"),
            Some((last, _)) => *last = nc,
            None => {
                if self.floor.is_some_and(|f| issued <= f) {
                    // It may have been used and evicted: make the phone take a fresh nonce.
                    return Verdict::Stale;
                }
                while self.seen.len() >= NC_TABLE_MAX {
                    let Some((_, old)) = self.order.pop_front() else {
                        break;
                    };
                    if let Some((_, old_issued)) = self.seen.remove(&old) {
                        self.floor = Some(self.floor.map_or(old_issued, |f| f.max(old_issued)));
                    }
                }
                self.seen.insert(id, (nc, issued));
                self.order.push_back((issued, id));
            }
        }
        // Only a fresh, unreplayed success counts (a replayed or stale header proves nothing
        // about the sender).
        self.by_pair.remove(&(source, uid));
        *self.good.touch((source, uid), || now) = now;
        Verdict::Ok {
            user: user.to_string(),
        }
    }

    /// Forget nonces past their lifetime (they are refused as stale anyway) and quiet
    /// failure counts.
    fn prune(&mut self, now: Instant) {
        if now.duration_since(self.last_prune) < Duration::from_secs(1) {
            return;
        }
        self.last_prune = now;
        // First-use order is close to issue order; stop at the first unexpired entry.
        while let Some(&(issued, id)) = self.order.front() {
            if now.duration_since(issued) <= self.ttl {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
        let p = self.policy;
        self.by_pair.expire(|s| s.idle(now, &p));
        self.by_source.expire(|s| s.idle(now, &p));
        self.by_ext.expire(|s| s.idle(now, &p));
        self.good.expire(|t| now.duration_since(*t) > GOOD_TTL);
    }

    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }

    /// Entries in the failure tables (per source and user, per source, per user).
    pub fn tracked_failures(&self) -> (usize, usize, usize) {
        (self.by_pair.len(), self.by_source.len(), self.by_ext.len())
    }
}

#[cfg(test)]
mod tests;
