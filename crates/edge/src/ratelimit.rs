//! Per-source request rate limit: a token bucket per source (an IPv4 address or an IPv6 /64,
//! [`source_key`]), bounded in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use orbit_sip::transport::source_key;

struct Bucket {
    tokens: f64,
    last: Instant,
    last_answer: Option<Instant>,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

/// Beyond this many tracked sources, idle ones are dropped first; a flood from many
/// addresses cannot grow the table without bound.
const MAX_SOURCES: usize = 100_000;

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: per_sec as f64,
            burst: burst.max(1) as f64,
            buckets: HashMap::new(),
        }
    }

    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let ip = source_key(ip);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            self.prune_older_than(now, Duration::from_secs(1));
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            last_answer: None,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether to answer a limited request with 503 (at most once a second per source).
    pub fn should_answer(&mut self, now: Instant, ip: IpAddr) -> bool {
        let ip = source_key(ip);
        let Some(b) = self.buckets.get_mut(&ip) else {
            return false;
        };
        match b.last_answer {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => false,
            _ => {
                b.last_answer = Some(now);
                true
            }
        }
    }

    pub fn prune(&mut self, now: Instant) {
        self.prune_older_than(now, Duration::from_secs(60));
    }

    fn prune_older_than(&mut self, now: Instant, age: Duration) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_and_refills() {
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut r = RateLimiter::new(10, 5);
        assert_eq!((0..10).filter(|_| r.allow(t0, ip)).count(), 5);
        assert!(r.should_answer(t0, ip));
        assert!(!r.should_answer(t0, ip));
        // 0.5 s later, 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| r.allow(t1, ip)).count(), 5);
        // Another source is unaffected.
        assert!(r.allow(t1, "10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5);
        // A host picking a new address of its /64 for each request gets no more.
        let sent = (0..10u16)
            .filter(|i| r.allow(t0, format!("2001:db8:5:6::{i:x}").parse().unwrap()))
            .count();
        assert_eq!(sent, 5);
        assert!(
            r.allow(t0, "2001:db8:5:7::1".parse().unwrap()),
            "another /64"
        );
    }
}
