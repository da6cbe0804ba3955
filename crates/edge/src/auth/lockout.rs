//! Failure counting and lockout for digest authentication. Wrong digests (and unknown users)
//! are counted in three tables, each bounded and evicting the least recently active entry: per
//! source and extension, per source, and per extension from any source. Too many within a window
//! lock that key out for a while, doubling with each lockout up to a cap. Sources are IPv4
//! addresses or IPv6 /64 prefixes (one host commonly holds a whole /64). The source and
//! extension locks do not apply to a source where the extension recently authenticated: a
//! stranger cannot lock a user out of the phone it already uses, only out of new places.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::warn;

use super::Authenticator;

/// Failure limits, from [`AuthConfig`](crate::config::AuthConfig). A limit of 0 counts nothing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub(super) per_source_ext: u32,
    pub(super) per_source: u32,
    pub(super) per_ext: u32,
    pub(super) window: Duration,
    pub(super) lockout: Duration,
    pub(super) lockout_max: Duration,
}

impl Policy {
    /// An entry unlocked and quiet for this long is forgotten (its lockout level with it).
    fn forget(&self) -> Duration {
        self.window + self.lockout_max
    }
}

/// Failures of one key (source and extension, source, or extension).
#[derive(Debug)]
pub(super) struct Strikes {
    /// Failures in the current window, which began at `since`.
    count: u32,
    since: Instant,
    /// Lockouts so far: the next lasts `lockout × 2^level`, up to `lockout_max`.
    level: u32,
    locked_until: Option<Instant>,
    /// The latest failure or refused attempt.
    last: Instant,
}

impl Strikes {
    fn new(now: Instant) -> Strikes {
        Strikes {
            count: 0,
            since: now,
            level: 0,
            locked_until: None,
            last: now,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    /// Count a failure; the lockout's length when this one starts a lockout.
    fn strike(&mut self, now: Instant, limit: u32, p: &Policy) -> Option<Duration> {
        self.last = now;
        if limit == 0 || self.locked(now) {
            return None;
        }
        if now.duration_since(self.since) > p.window {
            self.count = 0;
            self.since = now;
        }
        self.count += 1;
        if self.count < limit {
            return None;
        }
        let d = p
            .lockout
            .saturating_mul(1 << self.level.min(20))
            .min(p.lockout_max);
        self.level += 1;
        self.count = 0;
        self.since = now + d;
        self.locked_until = Some(now + d);
        Some(d)
    }

    pub(super) fn idle(&self, now: Instant, p: &Policy) -> bool {
        !self.locked(now) && now.duration_since(self.last) > p.forget()
    }
}

/// A map bounded to `cap` entries that evicts the least recently touched one when full.
pub(super) struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    /// Touch sequence → key, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    /// The entry for `k` (made with `make` when absent, evicting the least recently touched
    /// entry when full), now the most recently touched.
    pub(super) fn touch(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        let seq = self.next;
        self.next += 1;
        if let Some((_, s)) = self.map.get_mut(&k) {
            self.order.remove(s);
            *s = seq;
        } else {
            while self.map.len() >= self.cap {
                let Some((_, old)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&old);
            }
            self.map.insert(k.clone(), (make(), seq));
        }
        self.order.insert(seq, k.clone());
        &mut self.map.get_mut(&k).expect("just inserted").0
    }

    pub(super) fn remove(&mut self, k: &K) {
        if let Some((_, s)) = self.map.remove(k) {
            self.order.remove(&s);
        }
    }

    /// Drop the least recently touched entries while `idle` holds for them.
    pub(super) fn expire(&mut self, idle: impl Fn(&V) -> bool) {
        while let Some((&s, k)) = self.order.first_key_value() {
            if !self.map.get(k).is_some_and(|(v, _)| idle(v)) {
                break;
            }
            if let Some(k) = self.order.remove(&s) {
                self.map.remove(&k);
            }
        }
    }
}

pub(super) use orbit_sip::transport::source_key;

/// Usernames as they appear in a log line: bounded, escaped.
fn shown(user: &str) -> String {
    user.chars()
        .take(32)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// Most entries in each failure table (about 150 bytes each, with the order index): a spray
/// from more sources than this evicts the least recently active ones.
pub(super) const STRIKES_MAX: usize = 65_536;

/// How long a successful authentication from a source exempts that extension there from
/// the source and extension lockouts (phones re-register well within it).
pub(super) const GOOD_TTL: Duration = Duration::from_secs(86_400);

impl Authenticator {
    /// A username's key in the failure tables.
    pub(super) fn user_id(&self, user: &str) -> u64 {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(b"user\0");
        m.update(user.as_bytes());
        let full = m.finalize().into_bytes();
        u64::from_be_bytes(full[..8].try_into().expect("8 bytes"))
    }

    /// Whether `user` (by id) from `source` is locked out now; a refused attempt keeps the
    /// locked entries fresh (so they are not evicted while in use).
    pub(super) fn locked_out(&mut self, now: Instant, source: IpAddr, uid: u64) -> bool {
        let good = self
            .good
            .get(&(source, uid))
            .is_some_and(|t| now.duration_since(*t) <= GOOD_TTL);
        let mut locked = false;
        if self
            .by_pair
            .get(&(source, uid))
            .is_some_and(|s| s.locked(now))
        {
            self.by_pair.touch((source, uid), || Strikes::new(now)).last = now;
            locked = true;
        }
        if !good && self.by_source.get(&source).is_some_and(|s| s.locked(now)) {
            self.by_source.touch(source, || Strikes::new(now)).last = now;
            locked = true;
        }
        if !good && self.by_ext.get(&uid).is_some_and(|s| s.locked(now)) {
            self.by_ext.touch(uid, || Strikes::new(now)).last = now;
            locked = true;
        }
        locked
    }

    /// Count a wrong digest (or unknown user: `known` false, not counted for the extension),
    /// logging each lockout it starts.
    pub(super) fn fail(&mut self, now: Instant, source: IpAddr, uid: u64, user: &str, known: bool) {
        let p = self.policy;
        let s = self.by_pair.touch((source, uid), || Strikes::new(now));
        if let Some(d) = s.strike(now, p.per_source_ext, &p) {
            warn!(%source, user = %shown(user), lockout_secs = d.as_secs(), "too many wrong digests for this user from this source: locked out");
        }
        let s = self.by_source.touch(source, || Strikes::new(now));
        if let Some(d) = s.strike(now, p.per_source, &p) {
            warn!(%source, lockout_secs = d.as_secs(), "too many wrong digests from this source: locked out, except where an extension recently authenticated");
        }
        if known {
            let s = self.by_ext.touch(uid, || Strikes::new(now));
            if let Some(d) = s.strike(now, p.per_ext, &p) {
                warn!(user = %shown(user), lockout_secs = d.as_secs(), "too many wrong digests for this extension: locked out, except from sources where it recently authenticated");
            }
        }
    }
}
