//! Digest authentication (RFC 3261 §22, RFC 8760 for SHA-256, RFC 7616 for the nonce rules).
//!
//! Nonces are self-validating: `base64url(issued_at ‖ random ‖ HMAC(key, issued_at ‖ random))`,
//! so issuing one stores nothing. A nonce older than the TTL is answered with a new challenge
//! carrying `stale=true`, so the phone retries without asking its user. Replay protection:
//! each nonce's highest nonce-count seen is remembered until the nonce expires, and a request
//! that does not raise it is refused.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, Extension};

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
}

pub struct Authenticator {
    key: [u8; 32],
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
}

/// Most nonces tracked at once (about 50 bytes each): 1M covers 3,000 authenticated requests/s
/// over a 300 s nonce lifetime. Beyond it the oldest are evicted (see `floor`).
const NC_TABLE_MAX: usize = 1_000_000;

impl Authenticator {
    pub fn new(realm: &str, cfg: &AuthConfig, now: Instant) -> Authenticator {
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut key);
        Authenticator {
            key,
            realm: realm.to_string(),
            algorithms: cfg
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::parse(a))
                .collect(),
            ttl: Duration::from_secs(cfg.nonce_ttl_secs),
            // The epoch sits one TTL in the past so that issue times never underflow.
            epoch: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
            seen: HashMap::new(),
            order: VecDeque::new(),
            floor: None,
            last_prune: now,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, data: &[u8]) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(data);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    pub fn nonce(&self, now: Instant) -> String {
        let ms = now.duration_since(self.epoch).as_millis() as u64;
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&ms.to_be_bytes());
        rand::Rng::fill(&mut rand::thread_rng(), &mut raw[8..16]);
        let mac = self.mac(&raw[..16]);
        raw[16..].copy_from_slice(&mac);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// When the nonce was issued and its id, if it is one of ours.
    fn nonce_issued(&self, nonce: &str) -> Option<(Instant, u64)> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()?;
        if raw.len() != 32 {
            return None;
        }
        let mac = self.mac(&raw[..16]);
        // Constant-time compare.
        let diff = mac
            .iter()
            .zip(&raw[16..])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return None;
        }
        let ms = u64::from_be_bytes(raw[..8].try_into().ok()?);
        // The MAC is unpredictable and unique per nonce: its first 8 bytes identify it.
        let id = u64::from_be_bytes(raw[16..24].try_into().ok()?);
        Some((self.epoch + Duration::from_millis(ms), id))
    }

    /// Challenge header values, one per configured algorithm, in preference order.
    pub fn challenges(&self, now: Instant, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
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

    /// Check credentials for `method` from an Authorization / Proxy-Authorization value.
    /// `lookup` returns the extension's secrets.
    pub fn verify<'e>(
        &mut self,
        now: Instant,
        method: &str,
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
        let alg = match p.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(a) {
                Some(a) if self.algorithms.contains(&a) => a,
                _ => return Verdict::Denied("algorithm not offered"),
            },
        };
        let Some((issued, id)) = self.nonce_issued(nonce) else {
            // Not ours (or forged): a fresh challenge, as for no credentials.
            return Verdict::Challenge;
        };
        let Some(ext) = lookup(user) else {
            return Verdict::Denied("unknown user");
        };
        let ha1 = match (alg, &ext.password, &ext.ha1_md5, &ext.ha1_sha256) {
            (Algorithm::Md5, _, Some(h), _) => h.to_ascii_lowercase(),
            (Algorithm::Sha256, _, _, Some(h)) => h.to_ascii_lowercase(),
            (_, Some(pw), _, _) => alg.hash(&[user, &self.realm, pw]),
            _ => return Verdict::Denied("no secret for algorithm"),
        };
        let ha2 = alg.hash(&[method, uri]);
        let qop = p.get("qop").copied();
        let (expected, nc) = match qop {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc_s), Some(cnonce)) = (p.get("nc").copied(), p.get("cnonce").copied())
                else {
                    return Verdict::Denied("qop without nc/cnonce");
                };
                let Ok(nc) = u32::from_str_radix(nc_s, 16) else {
                    return Verdict::Denied("bad nc");
                };
                (alg.hash(&[&ha1, nonce, nc_s, cnonce, q, &ha2]), nc)
            }
            Some(_) => return Verdict::Denied("unsupported qop"),
            None => (alg.hash(&[&ha1, nonce, &ha2]), 0),
        };
        if !expected.eq_ignore_ascii_case(response) {
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
        Verdict::Ok {
            user: user.to_string(),
        }
    }

    /// Forget nonces past their lifetime: they are refused as stale anyway.
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
    }

    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext() -> Extension {
        Extension {
            password: Some("pw1001".into()),
            ..Default::default()
        }
    }

    fn answer(alg: Algorithm, nonce: &str, nc: &str, pw: &str) -> String {
        let challenge = format!(
            "Digest realm=\"orbit\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
            alg.name()
        );
        super::answer(
            &challenge,
            &Credentials {
                user: "1001",
                password: pw,
                method: "REGISTER",
                uri: "sip:orbit",
                nc: u32::from_str_radix(nc, 16).unwrap(),
                cnonce: "c0ffee",
            },
        )
        .unwrap()
    }

    fn nonce_of(ch: &str) -> String {
        let i = ch.find("nonce=\"").unwrap() + 7;
        ch[i..i + ch[i..].find('"').unwrap()].to_string()
    }

    #[test]
    fn digest_md5_and_sha256_with_replay_and_stale() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("orbit", &AuthConfig::default(), t0);
        let e = ext();
        let ch = a.challenges(t0, false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256"));
        let nonce = nonce_of(&ch[0]);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let n = a.nonce(t0);
            let h = answer(alg, &n, "00000001", "pw1001");
            assert_eq!(
                a.verify(t0, "REGISTER", Some(&h), |_| Some(&e)),
                Verdict::Ok {
                    user: "1001".into()
                }
            );
            // The same nc again is a replay.
            assert!(matches!(
                a.verify(t0, "REGISTER", Some(&h), |_| Some(&e)),
                Verdict::Denied(_)
            ));
            let h2 = answer(alg, &n, "00000002", "pw1001");
            assert!(matches!(
                a.verify(t0, "REGISTER", Some(&h2), |_| Some(&e)),
                Verdict::Ok { .. }
            ));
        }
        let wrong = answer(Algorithm::Md5, &nonce, "00000001", "nope");
        assert_eq!(
            a.verify(t0, "REGISTER", Some(&wrong), |_| Some(&e)),
            Verdict::Denied("wrong credentials")
        );
        let later = t0 + Duration::from_secs(301);
        let old = answer(Algorithm::Md5, &nonce, "00000005", "pw1001");
        assert_eq!(
            a.verify(later, "REGISTER", Some(&old), |_| Some(&e)),
            Verdict::Stale
        );
        // A nonce we never issued.
        let forged = answer(Algorithm::Md5, "AAAA", "00000001", "pw1001");
        assert_eq!(
            a.verify(t0, "REGISTER", Some(&forged), |_| Some(&e)),
            Verdict::Challenge
        );
        assert_eq!(
            a.verify(t0, "REGISTER", None, |_| Some(&e)),
            Verdict::Challenge
        );
    }

    #[test]
    fn nonce_table_expires_and_stays_bounded() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("orbit", &AuthConfig::default(), t0);
        let e = ext();
        for i in 0..100 {
            let t = t0 + Duration::from_secs(i * 10);
            let n = a.nonce(t);
            let h = answer(Algorithm::Md5, &n, "00000001", "pw1001");
            assert!(matches!(
                a.verify(t, "REGISTER", Some(&h), |_| Some(&e)),
                Verdict::Ok { .. }
            ));
        }
        // A 300 s lifetime at one nonce per 10 s: about 30 are tracked, not 100.
        assert!(a.tracked_nonces() <= 32, "{}", a.tracked_nonces());
    }

    #[test]
    fn ha1_secrets() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("orbit", &AuthConfig::default(), t0);
        let e = Extension {
            ha1_md5: Some(Algorithm::Md5.hash(&["1001", "orbit", "pw1001"])),
            ..Default::default()
        };
        let n = a.nonce(t0);
        let h = answer(Algorithm::Md5, &n, "00000001", "pw1001");
        assert!(matches!(
            a.verify(t0, "REGISTER", Some(&h), |_| Some(&e)),
            Verdict::Ok { .. }
        ));
        let h = answer(Algorithm::Sha256, &n, "00000002", "pw1001");
        assert_eq!(
            a.verify(t0, "REGISTER", Some(&h), |_| Some(&e)),
            Verdict::Denied("no secret for algorithm")
        );
    }
}
