//! Calls ringing extensions that someone may pick up (issue 10, call pickup): the edge ringing
//! an extension records the ring, marks it answered when the callee answers, and ends it when
//! the call goes away; a pickup claims one still ringing. The log orders a pickup against the
//! callee's answer, so that of a callee answering and a colleague picking up, or of two
//! colleagues at two sites, exactly one has the call. Extension lamps show the records: early
//! while ringing, confirmed once answered.
//!
//! ```text
//! Ring ─▶ ringing ──RingAnswered──▶ in progress ──RingEnd──▶ gone
//!            ├──RingEnd (cancelled, failed)──▶ gone
//!            └──Pickup (the ring named, else the longest ringing of the extensions given)──▶ gone
//! ```
//!
//! Records are kept only while their calls last and at most [`MAX_RINGS`] at once; an edge
//! that loses its lease or restarts loses them with its parked calls.

use serde::{Deserialize, Serialize};

use crate::{in_range, Command, Event, Millis, Orbit, Rejection};

/// Unique for the life of the state (never reused), so stale commands can be fenced.
pub type RingId = u64;

/// Records at once: every site's calls to extensions someone may pick up, ringing or answered
/// and in progress, and recalls ringing parkers.
pub const MAX_RINGS: usize = 100_000;
/// Rings one edge may hold at once, so that one site cannot take every other site's share.
pub const MAX_RINGS_PER_EDGE: usize = 20_000;
/// Extensions one pickup may name (a pickup group's members).
pub const MAX_PICKUP_EXTS: usize = 10_000;

/// The ringing call as the edge ringing it describes it: who calls, and the caller's dialog
/// with that edge (a lamp shows it, RFC 4235; an INVITE with Replaces names it). A call the
/// extension makes ([`RingCall::called`]) is recorded the same way, for its lamp only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingCall {
    pub caller_uri: String,
    pub caller_display: Option<String>,
    /// The edge (site) where the call rings, which holds its caller and media.
    pub edge: String,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// A recall ringing the parker: the park it rings for. Picking it up claims the park in
    /// the same step, so that a retriever, the parker answering and a picker cannot all win.
    #[serde(default)]
    pub park: Option<crate::ParkId>,
    /// A call the extension makes, to this party (recorded only while a lamp watches the
    /// extension, `watches.rs`): a lamp shows it, nobody picks it up. None: a call to it.
    #[serde(default)]
    pub called: Option<String>,
}

impl RingCall {
    /// Whether the extension makes this call (rather than receives it).
    pub fn outgoing(&self) -> bool {
        self.called.is_some()
    }

    /// The ringing edge's tag in the caller's dialog (the extension's own tag is local).
    pub fn edge_tag(&self) -> &str {
        match self.outgoing() {
            true => &self.remote_tag,
            false => &self.local_tag,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ringing {
    pub id: RingId,
    pub tenant: String,
    /// The extension rung.
    pub ext: String,
    pub call: RingCall,
    /// When it was recorded (half a second into its ringing, or again after a pickup that
    /// never came): the longest recorded is picked up first.
    pub since: Millis,
    /// When its callee answered: the record stays, as the call in progress (a lamp shows it
    /// confirmed), until the call ends; nobody can pick it up any more.
    #[serde(default)]
    pub answered_at: Option<Millis>,
}

impl Orbit {
    /// A command about rings (`Ring`, `RingAnswered`, `RingEnd`, `Pickup`).
    pub(crate) fn apply_ring(&mut self, now: Millis, cmd: &Command) -> Result<Event, Rejection> {
        match cmd {
            Command::Ring { tenant, ext, call } => {
                self.ring(now, tenant, ext, call).map(Event::Ringing)
            }
            Command::RingAnswered { ring } => {
                self.ring_answered(now, *ring).map(Event::RingAnswered)
            }
            Command::RingEnd { ring } => self
                .ring_end(*ring)
                .map(|ringing| Event::RingEnded { ringing }),
            Command::Pickup {
                tenant,
                exts,
                ring,
                by,
            } => self
                .pickup(tenant, exts, *ring)
                .map(|(ringing, parked)| Event::PickedUp {
                    ringing,
                    by: by.clone(),
                    parked: parked.map(Box::new),
                }),
            _ => unreachable!("not a command about rings: {cmd:?}"),
        }
    }

    pub(crate) fn ring(
        &mut self,
        now: Millis,
        tenant: &str,
        ext: &str,
        call: &RingCall,
    ) -> Result<Ringing, Rejection> {
        if let Some(p) = call.park {
            // A recall's ring names the park a pickup of it takes: only a park this edge holds,
            // of this tenant.
            let own = self
                .parks
                .get(&p)
                .is_some_and(|x| x.call.edge == call.edge && x.lot.tenant == tenant);
            if !own {
                return Err(Rejection::Gone(p));
            }
        }
        let of_edge = self.rings_by_edge.get(&call.edge).copied().unwrap_or(0);
        for (what, held, max) in [
            ("rings", self.rings.len(), MAX_RINGS),
            ("rings of one edge", of_edge, MAX_RINGS_PER_EDGE),
        ] {
            if held >= max {
                return Err(Rejection::OutOfRange {
                    what: what.into(),
                    value: held as u64 + 1,
                    max: max as u64,
                });
            }
        }
        self.next_ring += 1;
        let r = Ringing {
            id: self.next_ring,
            tenant: tenant.to_string(),
            ext: ext.to_string(),
            call: call.clone(),
            since: now,
            answered_at: None,
        };
        self.rings.insert(r.id, r.clone());
        *self.rings_by_edge.entry(r.call.edge.clone()).or_default() += 1;
        self.rings_by_ext
            .entry((r.tenant.clone(), r.ext.clone()))
            .or_default()
            .insert(r.id);
        Ok(r)
    }

    /// Ring `ring`'s callee answered: the record stays as the call in progress. A call already
    /// answered, or gone (picked up first), is refused.
    pub(crate) fn ring_answered(
        &mut self,
        now: Millis,
        ring: RingId,
    ) -> Result<Ringing, Rejection> {
        let r = self
            .rings
            .get_mut(&ring)
            .filter(|r| r.answered_at.is_none())
            .ok_or(Rejection::NotRinging)?;
        r.answered_at = Some(now);
        Ok(r.clone())
    }

    pub(crate) fn ring_end(&mut self, ring: RingId) -> Result<Ringing, Rejection> {
        let r = self.rings.remove(&ring).ok_or(Rejection::NotRinging)?;
        if let Some(n) = self.rings_by_edge.get_mut(&r.call.edge) {
            *n -= 1;
            if *n == 0 {
                self.rings_by_edge.remove(&r.call.edge);
            }
        }
        let key = (r.tenant.clone(), r.ext.clone());
        if let Some(ids) = self.rings_by_ext.get_mut(&key) {
            ids.remove(&r.id);
            if ids.is_empty() {
                self.rings_by_ext.remove(&key);
            }
        }
        Ok(r)
    }

    /// Take ring `ring` if it rings one of `exts` of `tenant`, or without one named, the
    /// longest ringing of them; a recall's ring takes its park too.
    pub(crate) fn pickup(
        &mut self,
        tenant: &str,
        exts: &[String],
        ring: Option<RingId>,
    ) -> Result<(Ringing, Option<crate::Parked>), Rejection> {
        in_range(
            "pickup extensions",
            exts.len() as u64,
            MAX_PICKUP_EXTS as u64,
        )?;
        // A set: a pickup's extensions are looked up once per ring, up to every ring recorded.
        let exts: std::collections::HashSet<&str> = exts.iter().map(String::as_str).collect();
        // A recall's ring counts while its park is still parked (retrieved or answered, it
        // rings on only until its edge ends it).
        let mine = |r: &Ringing| {
            r.answered_at.is_none()
                && !r.call.outgoing()
                && r.tenant == tenant
                && exts.contains(r.ext.as_str())
                && r.call.park.is_none_or(|p| self.parks.contains_key(&p))
        };
        let id = match ring {
            Some(id) => self
                .rings
                .get(&id)
                .filter(|r| mine(r))
                .map(|r| r.id)
                .ok_or(Rejection::NotRinging)?,
            // Ids grow with time, so among rings begun at the same instant the first recorded.
            None => exts
                .iter()
                .filter_map(|e| self.rings_by_ext.get(&(tenant.to_string(), e.to_string())))
                .flatten()
                .filter_map(|id| self.rings.get(id))
                .filter(|r| mine(r))
                .min_by_key(|r| (r.since, r.id))
                .map(|r| r.id)
                .ok_or(Rejection::NotRinging)?,
        };
        let ringing = self.ring_end(id)?;
        let parked = match ringing.call.park {
            Some(p) => Some(self.remove(p)?),
            None => None,
        };
        Ok((ringing, parked))
    }

    /// The rings of `edge`, removed (its lease lapsed, or it restarted).
    pub(crate) fn drop_rings(&mut self, edge: &str) -> Vec<Ringing> {
        let ids: Vec<RingId> = self
            .rings
            .values()
            .filter(|r| r.call.edge == edge)
            .map(|r| r.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.ring_end(id).ok())
            .collect()
    }

    /// How many records each edge holds.
    pub fn rings_per_edge(&self) -> impl Iterator<Item = (&String, usize)> {
        self.rings_by_edge.iter().map(|(e, n)| (e, *n))
    }

    /// Whether ring `id` is newer than this state: a replica behind the log has not seen it.
    pub fn is_future_ring(&self, id: RingId) -> bool {
        id > self.next_ring
    }

    /// A call recorded now (ringing, or answered and in progress), by its id.
    pub fn ringing(&self, id: RingId) -> Option<&Ringing> {
        self.rings.get(&id)
    }

    /// The call ringing whose caller's dialog has Call-ID `call_id` and tags `tags` (in either
    /// order: what a lamp showed as local and remote, a Replaces names as to and from).
    pub fn ringing_dialog(&self, call_id: &str, tags: [&str; 2]) -> Option<&Ringing> {
        self.rings.values().find(|r| {
            let c = &r.call;
            r.answered_at.is_none()
                && !c.outgoing()
                && c.call_id == call_id
                && ((c.local_tag == tags[0] && c.remote_tag == tags[1])
                    || (c.local_tag == tags[1] && c.remote_tag == tags[0]))
        })
    }

    /// The calls to extension `ext` of `tenant` (and those it makes, while watched), ringing or
    /// answered (still in progress), longest first.
    pub fn rings_of_ext(&self, tenant: &str, ext: &str) -> Vec<&Ringing> {
        let mut v: Vec<&Ringing> = self
            .rings_by_ext
            .get(&(tenant.to_string(), ext.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|id| self.rings.get(id))
            .collect();
        v.sort_by_key(|r| (r.since, r.id));
        v
    }

    /// Every call to an extension of `tenant`, ringing or answered (still in progress), longest
    /// first.
    pub fn rings_of(&self, tenant: &str) -> Vec<&Ringing> {
        let mut v: Vec<&Ringing> = self.rings.values().filter(|r| r.tenant == tenant).collect();
        v.sort_by_key(|r| (r.since, r.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use crate::{Command, Event, Millis, Orbit, Rejection};

    use super::*;

    const T0: Millis = 1_800_000_000_000;

    fn call(n: u32, edge: &str) -> RingCall {
        RingCall {
            caller_uri: format!("sip:{n}@example.com"),
            caller_display: Some(format!("Caller {n}")),
            edge: edge.into(),
            call_id: format!("call-{n}"),
            local_tag: format!("l{n}"),
            remote_tag: format!("r{n}"),
            park: None,
            called: None,
        }
    }

    fn ring(o: &mut Orbit, now: Millis, ext: &str, n: u32, edge: &str) -> Ringing {
        let cmd = Command::Ring {
            tenant: "example.com".into(),
            ext: ext.into(),
            call: call(n, edge),
        };
        match o.apply(now, &cmd).unwrap() {
            Event::Ringing(r) => r,
            e => panic!("{e:?}"),
        }
    }

    fn pickup(o: &mut Orbit, exts: &[&str], ring: Option<RingId>) -> Result<Event, Rejection> {
        o.apply(
            T0 + 60_000,
            &Command::Pickup {
                tenant: "example.com".into(),
                exts: exts.iter().map(|e| e.to_string()).collect(),
                ring,
                by: "1003".into(),
            },
        )
    }

    fn picked(ev: Result<Event, Rejection>) -> RingId {
        match ev {
            Ok(Event::PickedUp { ringing, by, .. }) => {
                assert_eq!(by, "1003");
                ringing.id
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn group_pickup_takes_the_longest_ringing_of_the_group_once() {
        let mut o = Orbit::new();
        let late = ring(&mut o, T0 + 5_000, "1001", 1, "site-a");
        let outside = ring(&mut o, T0, "1009", 2, "site-b");
        let early = ring(&mut o, T0 + 1_000, "1002", 3, "site-b");
        let group = ["1001", "1002"];
        assert_eq!(picked(pickup(&mut o, &group, None)), early.id);
        assert_eq!(picked(pickup(&mut o, &group, None)), late.id);
        assert_eq!(pickup(&mut o, &group, None), Err(Rejection::NotRinging));
        // The one outside the group was never a candidate, and still rings.
        assert_eq!(o.ringing(outside.id), Some(&outside));
        assert_eq!(o.rings_of("example.com"), vec![&outside]);
    }

    #[test]
    fn a_call_an_extension_makes_shows_on_its_lamp_and_nobody_picks_it_up() {
        let mut o = Orbit::new();
        let mut made = call(1, "site-a");
        made.called = Some("sip:2001@example.com".into());
        let cmd = Command::Ring {
            tenant: "example.com".into(),
            ext: "1001".into(),
            call: made,
        };
        let Ok(Event::Ringing(out)) = o.apply(T0, &cmd) else {
            panic!("not recorded")
        };
        assert_eq!(o.rings_of_ext("example.com", "1001"), vec![&out]);
        assert_eq!(pickup(&mut o, &["1001"], None), Err(Rejection::NotRinging));
        assert_eq!(
            pickup(&mut o, &["1001"], Some(out.id)),
            Err(Rejection::NotRinging)
        );
        assert_eq!(o.ringing_dialog("call-1", ["l1", "r1"]), None);
        // A call to the extension beside it is picked up as ever.
        let to = ring(&mut o, T0 + 1_000, "1001", 2, "site-b");
        assert_eq!(o.ringing_dialog("call-2", ["l2", "r2"]), Some(&to));
        assert_eq!(picked(pickup(&mut o, &["1001"], None)), to.id);
        assert_eq!(
            o.ringing(out.id),
            Some(&out),
            "the call it makes stays shown"
        );
    }

    #[test]
    fn a_named_ring_is_taken_only_if_it_rings_an_extension_the_picker_may_take() {
        let mut o = Orbit::new();
        let r = ring(&mut o, T0, "1002", 1, "site-a");
        // Directed pickup of another extension, a lamp key naming a ring outside the group, or
        // another tenant: nothing there for this picker.
        assert_eq!(
            pickup(&mut o, &["1001"], Some(r.id)),
            Err(Rejection::NotRinging)
        );
        let other_tenant = Command::Pickup {
            tenant: "other.com".into(),
            exts: vec!["1002".into()],
            ring: Some(r.id),
            by: "1003".into(),
        };
        assert_eq!(o.apply(T0, &other_tenant), Err(Rejection::NotRinging));
        assert_eq!(picked(pickup(&mut o, &["1002"], Some(r.id))), r.id);
    }

    #[test]
    fn of_an_answer_and_a_pickup_the_first_in_the_log_has_the_call() {
        let mut o = Orbit::new();
        let a = ring(&mut o, T0, "1002", 1, "site-a");
        let answered = Command::RingAnswered { ring: a.id };
        let in_progress = Ringing {
            answered_at: Some(T0 + 1),
            ..a.clone()
        };
        assert_eq!(
            o.apply(T0 + 1, &answered),
            Ok(Event::RingAnswered(in_progress.clone()))
        );
        assert_eq!(
            pickup(&mut o, &["1002"], Some(a.id)),
            Err(Rejection::NotRinging)
        );
        assert_eq!(pickup(&mut o, &["1002"], None), Err(Rejection::NotRinging));
        // The answered call stays recorded (a lamp shows it) until it ends; answered once.
        assert_eq!(o.rings_of("example.com"), vec![&in_progress]);
        assert_eq!(o.apply(T0 + 2, &answered), Err(Rejection::NotRinging));
        let over = Command::RingEnd { ring: a.id };
        assert!(matches!(
            o.apply(T0 + 3, &over),
            Ok(Event::RingEnded { .. })
        ));
        assert!(o.rings_of("example.com").is_empty());
        // And the other way round: picked up first, the callee's answer finds it gone.
        let b = ring(&mut o, T0, "1002", 2, "site-a");
        assert_eq!(picked(pickup(&mut o, &["1002"], None)), b.id);
        let late = Command::RingAnswered { ring: b.id };
        assert_eq!(o.apply(T0 + 2, &late), Err(Rejection::NotRinging));
    }

    #[test]
    fn rings_and_the_extensions_a_pickup_names_are_bounded() {
        let mut o = Orbit::new();
        // One edge gets its share and no more; the others fill the rest.
        for n in 0..MAX_RINGS_PER_EDGE as u32 {
            ring(&mut o, T0, "1002", n, "site-a");
        }
        let from_a = Command::Ring {
            tenant: "example.com".into(),
            ext: "1002".into(),
            call: call(0, "site-a"),
        };
        assert!(matches!(
            o.apply(T0, &from_a),
            Err(Rejection::OutOfRange { .. })
        ));
        for n in MAX_RINGS_PER_EDGE as u32..MAX_RINGS as u32 {
            let edge = format!("site-{}", n as usize / MAX_RINGS_PER_EDGE);
            ring(&mut o, T0, "1002", n, &edge);
        }
        let one_more = Command::Ring {
            tenant: "example.com".into(),
            ext: "1002".into(),
            call: call(0, "site-z"),
        };
        assert!(matches!(
            o.apply(T0, &one_more),
            Err(Rejection::OutOfRange { .. })
        ));
        let many: Vec<String> = (0..=MAX_PICKUP_EXTS).map(|n| n.to_string()).collect();
        let big = Command::Pickup {
            tenant: "example.com".into(),
            exts: many,
            ring: None,
            by: "1003".into(),
        };
        assert!(matches!(
            o.apply(T0, &big),
            Err(Rejection::OutOfRange { .. })
        ));
        assert!(matches!(
            pickup(&mut o, &[], None),
            Err(Rejection::OutOfRange { .. })
        ));
        // Ended rings make room again.
        let first = o.rings_of("example.com")[0].id;
        o.apply(T0, &Command::RingEnd { ring: first }).unwrap();
        assert!(o.apply(T0, &one_more).is_ok());
    }

    #[test]
    fn an_edge_that_lapses_loses_its_rings_and_ids_are_never_reused() {
        let mut o = Orbit::new();
        let lease = Command::Lease {
            edge: "site-b".into(),
            ttl_ms: 10_000,
            incarnation: 0,
            replaces: 0,
            sip: None,
            load: Default::default(),
        };
        o.apply(T0, &lease).unwrap();
        let a = ring(&mut o, T0, "1001", 1, "site-a");
        let b = ring(&mut o, T0, "1002", 2, "site-b");
        match o.apply(
            T0 + 10_000,
            &Command::LeaseLapse {
                edge: "site-b".into(),
            },
        ) {
            Ok(Event::LeaseLapsed { rings, .. }) => assert_eq!(rings, vec![b.clone()]),
            e => panic!("{e:?}"),
        }
        assert_eq!(o.rings_of("example.com"), vec![&a]);
        // A snapshot keeps the rings and the next id.
        let mut back: Orbit = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back.rings_of("example.com"), vec![&a]);
        let c = ring(&mut back, T0, "1003", 3, "site-a");
        assert!(c.id > b.id, "ids are never reused");
    }
}
