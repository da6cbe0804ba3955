//! The registry's time, as the log carries it, and the gates that keep deadlines and lease
//! lapses from firing early on a leader whose wall clock runs ahead.
//!
//! Every entry is stamped with its leader's time, and the state machine compares deadlines with
//! the stamps ([`orbit_state::Orbit::apply`] reads no clock). Stamped with each leader's wall
//! clock alone, a leader 5 s ahead fired parks made under another leader 5 s early (the chaos
//! run with `--skew-secs 5`), and a leader behind fired them late and stamped back in time. So:
//!
//! - **Stamps never step back**: a leader stamps the later of its wall clock and the log's
//!   time: the stamp applied here furthest ahead of this node's monotonic clock, carried on by
//!   it (a leader behind carries on the log's time rather than its own). Carried from that one
//!   entry, not from the latest: each entry is applied a little after its stamp, and stamps
//!   carried from the latest would fall behind by that much per entry (the first try did: a
//!   term's stamps ran slow, and deadlines measured by them came tens of ms early).
//! - **Never early, on any node's clock**: an entry is applied here after its leader stamped
//!   it, so for each leader's term this node keeps the least `applied - stamp` it has seen
//!   (its monotonic clock against that leader's stamps: an offset that is never too small). A
//!   deadline stamped in term `t` fires here no sooner than `deadline + offset(t)` on this
//!   node's monotonic clock: never early whatever the clocks say, late by the quickest
//!   replication of that term (milliseconds; a node that caught up on entries the term's
//!   leader made while it was away learns the tight offset from the next entry it gets live).
//!   The leader proposes an `Expire` only once that gate has opened too, and an edge's lease
//!   lapse the same way.
//! - Entries this node had in its log before it started (a restart's replay), and state from a
//!   snapshot, carry no gate: no monotonic clock here saw them committed, and only the stamps
//!   (the wall clocks) speak for them.
//!
//! Pure: the instants are handed in (tokio's clock, virtual in the simulation).

use std::collections::HashMap;

use orbit_state::{Event, Millis, ParkId};
use tokio::time::Instant;

/// Terms whose offsets are kept beyond those that gate something.
const TERMS_KEPT: usize = 8;

/// The log's time on this node, and the gates of what it applied as it was committed.
#[derive(Debug)]
pub struct LogClock {
    /// This node's monotonic clock is measured from here, in ms.
    base: Instant,
    /// The stamp applied here furthest ahead of this node's monotonic clock, and when.
    last: Option<(Millis, Instant)>,
    /// Entries at or below this index were in the log when this node started: replayed.
    live_after: u64,
    /// Term → the least (applied here, in ms since `base`) - (stamp) of its entries.
    offsets: HashMap<u64, i64>,
    /// Park → its deadline and the term that stamped it.
    parks: HashMap<ParkId, (Millis, u64)>,
    /// Edge → the end of its lease and the term that stamped it.
    leases: HashMap<String, (Millis, u64)>,
}

impl LogClock {
    /// A clock for a node whose log held entries up to `live_after` when it started `now`.
    pub fn new(live_after: u64, now: Instant) -> LogClock {
        LogClock {
            base: now,
            last: None,
            live_after,
            offsets: HashMap::new(),
            parks: HashMap::new(),
            leases: HashMap::new(),
        }
    }

    /// The stamp a leader gives an entry now: its wall clock `wall`, or the log's time if
    /// that is later (stamps never step back).
    pub fn stamp(&self, wall: Millis, now: Instant) -> Millis {
        match self.last {
            Some((at, when)) => {
                let since = now.saturating_duration_since(when).as_millis() as u64;
                wall.max(at.saturating_add(since))
            }
            None => wall,
        }
    }

    fn mono_ms(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.base).as_millis() as i64
    }

    /// Entry `index` of term `term`, stamped `at`, was applied `now` with `events`.
    pub fn applied(&mut self, index: u64, term: u64, at: Millis, now: Instant, events: &[&Event]) {
        if self.stamp(0, now) <= at {
            self.last = Some((at, now));
        }
        let live = index > self.live_after;
        if live {
            let off = self.mono_ms(now) - at as i64;
            let o = self.offsets.entry(term).or_insert(off);
            *o = (*o).min(off);
        }
        for ev in events {
            match ev {
                Event::Parked(p) | Event::Extended(p) if live => {
                    self.parks.insert(p.id, (p.deadline, term));
                }
                Event::Parked(p)
                | Event::Extended(p)
                | Event::Expired(p)
                | Event::Claimed { parked: p, .. }
                | Event::Ended { parked: p, .. } => {
                    self.parks.remove(&p.id);
                }
                Event::LeaseGranted { edge, until } | Event::EdgeRestarted { edge, until, .. } => {
                    if live {
                        self.leases.insert(edge.clone(), (*until, term));
                    } else {
                        self.leases.remove(edge);
                    }
                    if let Event::EdgeRestarted { lost, .. } = ev {
                        for p in lost {
                            self.parks.remove(&p.id);
                        }
                    }
                }
                Event::LeaseLapsed { edge, lost, .. } => {
                    self.leases.remove(edge);
                    for p in lost {
                        self.parks.remove(&p.id);
                    }
                }
                _ => {}
            }
        }
        if self.offsets.len() > TERMS_KEPT {
            let used: std::collections::HashSet<u64> = self
                .parks
                .values()
                .chain(self.leases.values())
                .map(|(_, t)| *t)
                .chain([term])
                .collect();
            self.offsets.retain(|t, _| used.contains(t));
        }
    }

    /// The state was replaced by a snapshot: what it holds carries no gate.
    pub fn replaced(&mut self) {
        self.parks.clear();
        self.leases.clear();
    }

    /// When `until`, stamped in `term`, has come by this node's monotonic clock, if not yet.
    fn gate(&self, (until, term): (Millis, u64), now: Instant) -> Option<Instant> {
        let off = *self.offsets.get(&term)?;
        let at = until as i64 + off;
        (at > self.mono_ms(now)).then(|| self.base + std::time::Duration::from_millis(at as u64))
    }

    /// When park `park`'s deadline may fire, if not yet at `now`.
    pub fn park_gate(&self, park: ParkId, now: Instant) -> Option<Instant> {
        self.gate(*self.parks.get(&park)?, now)
    }

    /// When edge `edge`'s lease may lapse, if not yet at `now`.
    pub fn lease_gate(&self, edge: &str, now: Instant) -> Option<Instant> {
        self.gate(self.leases.get(edge).cloned()?, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orbit_state::{CallInfo, Command, LotConfig, Orbit};

    use super::*;

    fn park_at(o: &mut Orbit, at: Millis) -> Event {
        let lot = LotConfig {
            tenant: "t".into(),
            park_ext: "700".into(),
            first_slot: 701,
            last_slot: 710,
            parking_ms: 60_000,
            recall_ring_ms: 20_000,
            fallback: None,
            choice: Default::default(),
        };
        o.apply(at, &Command::SetLot(lot.clone())).unwrap();
        let call = CallInfo {
            caller_uri: "sip:1@t".into(),
            caller_display: None,
            parker: "2".into(),
            edge: "site-a".into(),
            call_id: "c".into(),
            local_tag: "l".into(),
            remote_tag: "r".into(),
            codec: None,
            trace: None,
        };
        o.apply(
            at,
            &Command::Park {
                lot: lot.key(),
                slot: None,
                call,
            },
        )
        .unwrap()
    }

    /// A park stamped by a leader 5 s behind this node's clock: this node, leading now, still
    /// waits the whole parking time from when it applied the park.
    #[test]
    fn a_deadline_fires_no_sooner_than_its_parking_time_after_the_apply_here() {
        let t0 = Instant::now();
        let mut c = LogClock::new(0, t0);
        let mut o = Orbit::default();
        let ev = park_at(&mut o, 1_000_000);
        let Event::Parked(p) = &ev else { panic!() };
        c.applied(1, 3, 1_000_000, t0, &[&ev]);
        // This node's wall clock is 5 s ahead: by it the deadline has come 5 s early.
        let wall = 1_000_000 + 5_000 + 55_000;
        let now = t0 + Duration::from_secs(55);
        assert!(c.stamp(wall, now) >= p.deadline, "the stamps say it is due");
        assert_eq!(
            c.park_gate(p.id, now),
            Some(t0 + Duration::from_secs(60)),
            "the gate holds it"
        );
        assert_eq!(c.park_gate(p.id, t0 + Duration::from_secs(60)), None);
    }

    /// A park this node got late (it caught up after being away) is gated by the quickest
    /// entry of the same term it has seen: tight once one comes live.
    #[test]
    fn a_park_caught_up_late_is_gated_by_its_terms_quickest_entry() {
        let t0 = Instant::now();
        let mut c = LogClock::new(0, t0);
        let mut o = Orbit::default();
        // Stamped at 1,000,000 by term 3's leader; this node gets it 20 s later.
        let ev = park_at(&mut o, 1_000_000);
        let Event::Parked(p) = &ev else { panic!() };
        let got = t0 + Duration::from_secs(20);
        c.applied(1, 3, 1_000_000, got, &[&ev]);
        assert_eq!(c.park_gate(p.id, got), Some(got + Duration::from_secs(60)));
        // An entry of term 3 applied a millisecond after its stamp says when the park was made.
        let live = got + Duration::from_secs(1);
        c.applied(2, 3, 1_020_999, live, &[]);
        assert_eq!(
            c.park_gate(p.id, live),
            Some(t0 + Duration::from_millis(60_001))
        );
        // Another term's entries say nothing of term 3's leader's clock.
        c.applied(3, 4, 2_000_000, live, &[]);
        assert_eq!(
            c.park_gate(p.id, live),
            Some(t0 + Duration::from_millis(60_001))
        );
    }

    /// A leader whose clock is behind carries on the log's time: its stamps never step back.
    #[test]
    fn stamps_never_step_back_behind_the_log() {
        let t0 = Instant::now();
        let mut c = LogClock::new(0, t0);
        c.applied(1, 1, 1_000_000, t0, &[]);
        let now = t0 + Duration::from_millis(300);
        assert_eq!(
            c.stamp(995_000, now),
            1_000_300,
            "5 s behind: the log's time"
        );
        assert_eq!(c.stamp(1_002_000, now), 1_002_000, "ahead: its own");
        // This leader's own entry, stamped from the log's time and applied 2 ms later, does not
        // hold the log's time back by those 2 ms (it would, entry after entry).
        let applied = now + Duration::from_millis(2);
        c.applied(2, 1, 1_000_300, applied, &[]);
        assert_eq!(c.stamp(0, applied), 1_000_302);
        // An entry stamped further ahead (a leader whose clock runs ahead) carries it on.
        c.applied(3, 2, 1_005_000, applied, &[]);
        assert_eq!(c.stamp(0, applied + Duration::from_millis(10)), 1_005_010);
    }

    /// What was in the log at start, or came in a snapshot, has no gate (no clock here saw it
    /// committed); parks that leave the state drop theirs.
    #[test]
    fn replayed_and_gone_parks_have_no_gate() {
        let t0 = Instant::now();
        let mut o = Orbit::default();
        let ev = park_at(&mut o, 1_000_000);
        let Event::Parked(p) = &ev else { panic!() };
        let mut replayed = LogClock::new(5, t0);
        replayed.applied(5, 1, 1_000_000, t0, &[&ev]);
        assert_eq!(replayed.park_gate(p.id, t0), None);
        let mut live = LogClock::new(4, t0);
        live.applied(5, 1, 1_000_000, t0, &[&ev]);
        assert!(live.park_gate(p.id, t0).is_some());
        let claimed = Event::Claimed {
            parked: p.clone(),
            by: "x".into(),
        };
        live.applied(6, 1, 1_000_100, t0, &[&claimed]);
        assert_eq!(live.park_gate(p.id, t0), None);
        live.applied(7, 1, 1_000_000, t0, &[&ev]);
        live.replaced();
        assert_eq!(live.park_gate(p.id, t0), None);
    }

    #[test]
    fn a_lease_lapses_no_sooner_than_its_time_after_the_grant_here() {
        let t0 = Instant::now();
        let mut c = LogClock::new(0, t0);
        let grant = Event::LeaseGranted {
            edge: "site-a".into(),
            until: 1_015_000,
        };
        c.applied(1, 1, 1_000_000, t0, &[&grant]);
        assert_eq!(
            c.lease_gate("site-a", t0 + Duration::from_secs(10)),
            Some(t0 + Duration::from_secs(15))
        );
        assert_eq!(c.lease_gate("site-a", t0 + Duration::from_secs(15)), None);
        assert_eq!(c.lease_gate("site-b", t0), None);
    }
}
