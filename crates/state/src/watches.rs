//! Which extensions' lamps are watched, and from which edges (issue 10, extension lamps): an
//! edge with a lamp subscribed to an extension says so (`Watch`, renewed like a
//! registration), and every edge then records the calls to and from that extension from their
//! first ring, so that the lamp, at any site, shows calls the extension makes and calls
//! answered at once. Calls of extensions nobody watches cost the log nothing.
//!
//! At most [`MAX_WATCHES_PER_EDGE`] entries for one edge (one per extension it has lamps of),
//! [`MAX_WATCHES`] in all; an edge that loses its lease or restarts loses its entries, as its
//! phones' lamps resubscribe.

use std::collections::BTreeMap;

use crate::{Command, Event, Millis, Orbit, Rejection};

/// Entries (extension, edge) at once.
pub const MAX_WATCHES: usize = 100_000;
/// Entries of one edge: an edge holds at most this many lamp subscriptions anyway.
pub const MAX_WATCHES_PER_EDGE: usize = 20_000;
/// The furthest ahead a watch may be said to last (a lamp subscription's longest Expires is an
/// hour).
pub const MAX_WATCH_MS: Millis = 2 * 3600 * 1000;

/// (tenant, extension) → edge → watched until.
pub(crate) type Watches = BTreeMap<(String, String), BTreeMap<String, Millis>>;

/// How many entries each edge has in [`Watches`] (derived from them: not serialised).
pub(crate) fn count_by_edge(w: &Watches) -> BTreeMap<String, usize> {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for e in w.values().flat_map(BTreeMap::keys) {
        *n.entry(e.clone()).or_default() += 1;
    }
    n
}

impl Orbit {
    /// `Watch` or `Unwatch`.
    pub(crate) fn apply_watch(&mut self, now: Millis, cmd: &Command) -> Result<Event, Rejection> {
        match cmd {
            Command::Watch {
                tenant,
                ext,
                edge,
                until,
            } => {
                crate::commands::at_most(
                    "watch ahead ms",
                    until.saturating_sub(now),
                    MAX_WATCH_MS,
                )?;
                let key = (tenant.clone(), ext.clone());
                // Expired entries of the extension go when it is watched again.
                let expired: Vec<String> = self
                    .watches
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|(_, u)| **u <= now)
                    .map(|(e, _)| e.clone())
                    .collect();
                for e in expired {
                    self.unwatch(&key, &e);
                }
                if !self.watches.get(&key).is_some_and(|m| m.contains_key(edge)) {
                    self.watch_room(now, edge)?;
                    *self.watches_by_edge.entry(edge.clone()).or_default() += 1;
                }
                self.watches
                    .entry(key)
                    .or_default()
                    .insert(edge.clone(), *until);
                Ok(Event::Watched {
                    tenant: tenant.clone(),
                    ext: ext.clone(),
                    edge: edge.clone(),
                    until: *until,
                })
            }
            Command::Unwatch { tenant, ext, edge } => {
                self.unwatch(&(tenant.clone(), ext.clone()), edge);
                Ok(Event::Unwatched {
                    tenant: tenant.clone(),
                    ext: ext.clone(),
                    edge: edge.clone(),
                })
            }
            _ => unreachable!("not a command about watches: {cmd:?}"),
        }
    }

    /// Room for one more entry of `edge`: expired entries are swept only when a bound is
    /// reached (a scan, rare), so that each watch stays cheap.
    fn watch_room(&mut self, now: Millis, edge: &str) -> Result<(), Rejection> {
        let counts = |o: &Orbit| {
            let all: usize = o.watches_by_edge.values().sum();
            (all, o.watches_by_edge.get(edge).copied().unwrap_or(0))
        };
        let (mut all, mut of_edge) = counts(self);
        if all >= MAX_WATCHES || of_edge >= MAX_WATCHES_PER_EDGE {
            let expired: Vec<((String, String), String)> = self
                .watches
                .iter()
                .flat_map(|(k, m)| {
                    m.iter()
                        .filter(|(_, u)| **u <= now)
                        .map(move |(e, _)| (k.clone(), e.clone()))
                })
                .collect();
            for (k, e) in expired {
                self.unwatch(&k, &e);
            }
            (all, of_edge) = counts(self);
        }
        for (what, held, max) in [
            ("watches", all, MAX_WATCHES),
            ("watches of one edge", of_edge, MAX_WATCHES_PER_EDGE),
        ] {
            if held >= max {
                return Err(Rejection::OutOfRange {
                    what: what.into(),
                    value: held as u64 + 1,
                    max: max as u64,
                });
            }
        }
        Ok(())
    }

    /// `edge` watches extension `key` no more.
    fn unwatch(&mut self, key: &(String, String), edge: &str) {
        let Some(m) = self.watches.get_mut(key) else {
            return;
        };
        if m.remove(edge).is_some() {
            if let Some(n) = self.watches_by_edge.get_mut(edge) {
                *n -= 1;
                if *n == 0 {
                    self.watches_by_edge.remove(edge);
                }
            }
        }
        if m.is_empty() {
            self.watches.remove(key);
        }
    }

    /// An edge is gone (lease lapsed, restarted): its lamps went with it.
    pub(crate) fn drop_watches(&mut self, edge: &str) {
        if self.watches_by_edge.remove(edge).is_none() {
            return;
        }
        for m in self.watches.values_mut() {
            m.remove(edge);
        }
        self.watches.retain(|_, m| !m.is_empty());
    }

    /// Whether some edge has a lamp of extension `ext` of `tenant` at `now`. Asked at every
    /// call's start: with no lamp anywhere, it costs no lookup.
    pub fn watched(&self, tenant: &str, ext: &str, now: Millis) -> bool {
        if self.watches.is_empty() {
            return false;
        }
        self.watches
            .get(&(tenant.to_string(), ext.to_string()))
            .is_some_and(|m| m.values().any(|u| *u > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_800_000_000_000;

    fn watch(ext: &str, edge: &str, until: Millis) -> Command {
        Command::Watch {
            tenant: "t".into(),
            ext: ext.into(),
            edge: edge.into(),
            until,
        }
    }

    #[test]
    fn a_watch_lasts_until_its_end_or_its_unwatch() {
        let mut o = Orbit::new();
        assert!(!o.watched("t", "1001", T0));
        o.apply(T0, &watch("1001", "b", T0 + 60_000)).unwrap();
        assert!(o.watched("t", "1001", T0 + 59_999));
        assert!(!o.watched("t", "1001", T0 + 60_000), "expired");
        assert!(!o.watched("u", "1001", T0), "another tenant's extension");
        o.apply(T0, &watch("1001", "c", T0 + 60_000)).unwrap();
        let unwatch = Command::Unwatch {
            tenant: "t".into(),
            ext: "1001".into(),
            edge: "b".into(),
        };
        o.apply(T0, &unwatch).unwrap();
        assert!(o.watched("t", "1001", T0), "c still watches");
        o.drop_watches("c");
        assert!(!o.watched("t", "1001", T0), "c's lamps went with it");
        assert!(o.watches_by_edge.is_empty(), "{:?}", o.watches_by_edge);
    }

    #[test]
    fn a_watch_too_far_ahead_is_refused() {
        let mut o = Orbit::new();
        let e = o.apply(T0, &watch("1001", "b", T0 + MAX_WATCH_MS + 1));
        assert!(matches!(e, Err(Rejection::OutOfRange { .. })), "{e:?}");
        assert!(!o.watched("t", "1001", T0));
    }

    #[test]
    fn one_edge_cannot_take_every_watch_but_expired_ones_make_room() {
        let mut o = Orbit::new();
        for n in 0..MAX_WATCHES_PER_EDGE {
            o.apply(T0, &watch(&n.to_string(), "b", T0 + 1_000))
                .unwrap();
        }
        let full = o.apply(T0, &watch("x", "b", T0 + 1_000));
        assert!(
            matches!(&full, Err(Rejection::OutOfRange { what, .. }) if what == "watches of one edge"),
            "{full:?}"
        );
        // A renewal of an entry held is no new entry.
        o.apply(T0, &watch("7", "b", T0 + 2_000)).unwrap();
        // Another edge has room of its own.
        o.apply(T0, &watch("x", "c", T0 + 1_000)).unwrap();
        // Once the entries have expired, they make room.
        o.apply(T0 + 1_000, &watch("x", "b", T0 + 5_000)).unwrap();
        assert!(o.watched("t", "x", T0 + 1_500));
        assert!(o.watched("t", "7", T0 + 1_500), "the renewed entry stays");
        assert_eq!(o.watches_by_edge["b"], 2, "the expired entries counted out");
        assert_eq!(o.watches_by_edge, count_by_edge(&o.watches));
    }
}
