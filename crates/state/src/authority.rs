//! Who may propose a command (issue 11: nobody acts on what it does not own). The registry asks
//! this of every proposal from an edge, with the edge's identity from its certificate: an edge
//! acts for itself only (its parks, rings, registrations, lamps, lease), may claim any parked
//! call of the cluster in its own name (a retrieve from any site is the point) and seed a lot
//! its config names
//! where there is none; it never changes or deletes lots (an admin's to do), fires deadlines
//! or lapses leases (the registry leader's).

use crate::{Command, Event, Millis, Orbit, Rejection};

/// Who may propose a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposer<'a> {
    /// Only this edge: the command acts on what it holds.
    Edge(&'a str),
    /// Any edge (a claim of a parked call, a lot from config where there is none).
    AnyEdge,
    /// Not an edge: the registry itself (deadlines, lapsed leases) or an admin (lots, a park's
    /// deadline).
    Registry,
}

impl Orbit {
    /// Who may propose `cmd`, as of this state. A command naming a park or ring this state does
    /// not hold is any edge's to propose: the log refuses it anyway.
    pub fn proposer<'a>(&'a self, cmd: &'a Command) -> Proposer<'a> {
        let of_park = |id: &crate::ParkId| {
            self.parked(*id)
                .map_or(Proposer::AnyEdge, |p| Proposer::Edge(&p.call.edge))
        };
        let of_ring = |id: &crate::RingId| {
            self.ringing(*id)
                .map_or(Proposer::AnyEdge, |r| Proposer::Edge(&r.call.edge))
        };
        match cmd {
            Command::SeedLot(_) | Command::SeedTenant { .. } => Proposer::AnyEdge,
            // `by` is `edge/user` (whose edge id may hold a `/` itself), or a bare user from
            // an edge of before that and for a recall's answer: nobody claims in another
            // edge's name.
            Command::Claim { by, .. } => match by.rsplit_once('/') {
                Some((edge, _)) => Proposer::Edge(edge),
                None => Proposer::AnyEdge,
            },
            Command::SetLot(_)
            | Command::DeleteLot(_)
            | Command::SetPickupGroup(_)
            | Command::NodeAdmin { .. }
            | Command::DeletePickupGroup { .. }
            | Command::Extend { .. }
            | Command::Send { .. }
            | Command::Expire { .. }
            | Command::LeaseLapse { .. } => Proposer::Registry,
            Command::Park { call, .. } => Proposer::Edge(&call.edge),
            Command::RecallStage { park, .. }
            | Command::End { park, .. }
            | Command::Move { park, .. } => of_park(park),
            Command::Lease { edge, .. }
            | Command::Drain { edge }
            | Command::Release { edge, .. }
            | Command::Locate { edge, .. }
            | Command::Unlocate { edge, .. }
            | Command::Watch { edge, .. }
            | Command::Unwatch { edge, .. } => Proposer::Edge(edge),
            Command::Ring { call, .. } => Proposer::Edge(&call.edge),
            Command::RingAnswered { ring } | Command::RingEnd { ring } => of_ring(ring),
            // `by` is `edge/user`: the picker's edge (whose id may hold a `/` itself).
            Command::Pickup { by, .. } => {
                Proposer::Edge(by.rsplit_once('/').map_or("", |(edge, _)| edge))
            }
        }
    }

    /// Apply `cmd` proposed by `edge` (None: not an edge's): refused, changing nothing, if that
    /// edge may not propose it as of this state.
    pub fn apply_as(
        &mut self,
        now: Millis,
        edge: Option<&str>,
        cmd: &Command,
    ) -> Result<Event, Rejection> {
        if let Some(e) = edge {
            if !self.may_propose(e, cmd) {
                return Err(Rejection::NotYours {
                    edge: e.to_string(),
                    kind: cmd.kind().to_string(),
                });
            }
        }
        self.apply(now, cmd)
    }

    /// Whether `edge` may propose `cmd` as of this state.
    pub fn may_propose(&self, edge: &str, cmd: &Command) -> bool {
        match self.proposer(cmd) {
            Proposer::Edge(e) => e == edge,
            Proposer::AnyEdge => true,
            Proposer::Registry => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SlotChoice;

    #[test]
    fn an_edge_acts_only_for_itself_claims_anywhere_and_never_fires_deadlines() {
        let mut o = crate::tests::orbit(SlotChoice::FirstFree);
        let park = Command::Park {
            lot: crate::tests::key(),
            slot: None,
            call: crate::tests::call(1),
        };
        assert!(o.may_propose("site-a", &park));
        assert!(!o.may_propose("site-b", &park), "a park held by another");
        let crate::Event::Parked(p) = o.apply(0, &park).unwrap() else {
            panic!()
        };
        let end = Command::End {
            park: p.id,
            reason: crate::EndReason::HungUp,
        };
        assert!(o.may_propose("site-a", &end));
        assert!(!o.may_propose("site-b", &end), "ending another edge's park");
        let claim = Command::Claim {
            tenant: "example.com".into(),
            slot: p.slot,
            park: None,
            by: "3001".into(),
        };
        assert!(o.may_propose("site-b", &claim), "a retrieve from anywhere");
        let named = |by: &str| Command::Claim {
            tenant: "example.com".into(),
            slot: p.slot,
            park: None,
            by: by.into(),
        };
        assert!(o.may_propose("site-b", &named("site-b/3001")));
        assert!(
            !o.may_propose("site-c", &named("site-b/3001")),
            "a claim in another edge's name"
        );
        assert!(!o.may_propose("site-a", &Command::Expire { park: p.id }));
        let lapse = Command::LeaseLapse {
            edge: "site-b".into(),
        };
        assert!(!o.may_propose("site-b", &lapse));
        let lease = Command::Lease {
            edge: "site-a".into(),
            ttl_ms: 1_000,
            incarnation: 1,
            replaces: 0,
            sip: None,
            load: Default::default(),
        };
        assert!(!o.may_propose("site-b", &lease), "another edge's lease");
        // An operator's: no edge sends a parked call or changes pickup groups, not even the
        // edge holding the call.
        let group = crate::PickupGroup {
            tenant: "t".into(),
            name: "g".into(),
            members: ["1001".to_string()].into(),
        };
        for cmd in [
            Command::Send {
                park: p.id,
                to: "3001".into(),
            },
            Command::SetPickupGroup(group),
            Command::DeletePickupGroup {
                tenant: "t".into(),
                name: "g".into(),
            },
        ] {
            assert!(!o.may_propose("site-a", &cmd), "{cmd:?}");
        }
        let seed = Command::SeedTenant {
            tenant: "t".into(),
            extensions: vec![],
            groups: vec![],
        };
        assert!(o.may_propose("site-b", &seed), "a config's, as SeedLot");
        let pickup = Command::Pickup {
            tenant: "t".into(),
            exts: vec![],
            ring: None,
            by: "site-b/3001".into(),
        };
        assert!(o.may_propose("site-b", &pickup));
        assert!(
            !o.may_propose("site-a", &pickup),
            "a pickup in another's name"
        );
        let lot = crate::tests::lot(SlotChoice::FirstFree);
        assert!(o.may_propose("site-b", &Command::SeedLot(lot.clone())));
        assert!(!o.may_propose("site-b", &Command::SetLot(lot.clone())));
        assert!(!o.may_propose("site-b", &Command::DeleteLot(lot.key())));
    }

    #[test]
    fn a_seeded_lot_leaves_one_that_exists_and_a_lot_in_use_is_not_deleted() {
        let mut o = crate::tests::orbit(SlotChoice::FirstFree);
        let mut changed = crate::tests::lot(SlotChoice::FirstFree);
        changed.parking_ms = 30_000;
        o.apply(0, &Command::SetLot(changed.clone())).unwrap();
        let config = crate::tests::lot(SlotChoice::FirstFree);
        o.apply(0, &Command::SeedLot(config)).unwrap();
        assert_eq!(
            o.lots().next().unwrap().parking_ms,
            30_000,
            "the admin's change stays"
        );
        let park = Command::Park {
            lot: crate::tests::key(),
            slot: None,
            call: crate::tests::call(1),
        };
        let Ok(Event::Parked(p)) = o.apply(0, &park) else {
            panic!()
        };
        let delete = Command::DeleteLot(crate::tests::key());
        assert_eq!(o.apply(0, &delete), Err(Rejection::LotInUse(1)));
        let end = Command::End {
            park: p.id,
            reason: crate::EndReason::HungUp,
        };
        o.apply(0, &end).unwrap();
        assert!(matches!(o.apply(0, &delete), Ok(Event::LotDeleted(_))));
        assert_eq!(o.lots().count(), 0);
        assert_eq!(o.apply(0, &delete), Err(Rejection::NoSuchLot));
        // Seeded again where there is none: created.
        o.apply(0, &Command::SeedLot(changed)).unwrap();
        assert_eq!(o.lots().count(), 1);
    }

    #[test]
    fn an_end_sent_ahead_for_a_park_not_made_yet_is_refused_when_it_meets_the_park() {
        let mut o = crate::tests::orbit(SlotChoice::FirstFree);
        // Site B guesses the next park's id and proposes its end before site A parks.
        let end = Command::End {
            park: 1,
            reason: crate::EndReason::HungUp,
        };
        assert!(o.may_propose("site-b", &end), "unknown yet: nobody's");
        let park = Command::Park {
            lot: crate::tests::key(),
            slot: None,
            call: crate::tests::call(1),
        };
        let Ok(Event::Parked(p)) = o.apply_as(0, Some("site-a"), &park) else {
            panic!("site-a parks its own call")
        };
        assert_eq!(p.id, 1);
        let r = o.apply_as(0, Some("site-b"), &end);
        assert!(matches!(r, Err(Rejection::NotYours { .. })), "{r:?}");
        assert!(o.parked(1).is_some(), "still parked");
        assert!(o.apply_as(0, Some("site-a"), &end).is_ok());
    }

    #[test]
    fn an_operator_extends_a_waiting_park_and_the_recall_waits_for_the_new_deadline() {
        let mut o = crate::tests::orbit(SlotChoice::FirstFree);
        let park = Command::Park {
            lot: crate::tests::key(),
            slot: None,
            call: crate::tests::call(1),
        };
        let Ok(Event::Parked(p)) = o.apply(0, &park) else {
            panic!()
        };
        let extend = Command::Extend {
            park: p.id,
            by_ms: 60_000,
        };
        assert!(
            !o.may_propose("site-a", &extend),
            "an admin's, not even the holder's"
        );
        let Ok(Event::Extended(e)) = o.apply(1_000, &extend) else {
            panic!()
        };
        assert_eq!(e.deadline, p.deadline + 60_000);
        assert_eq!(o.next_deadline(), Some((e.deadline, p.id)));
        let expire = Command::Expire { park: p.id };
        assert!(matches!(
            o.apply(p.deadline, &expire),
            Err(Rejection::NotDue { .. })
        ));
        assert!(o.apply(e.deadline, &expire).is_ok());
        assert_eq!(
            o.apply(e.deadline, &extend),
            Err(Rejection::Recalling(p.id))
        );
        let far = Command::Extend {
            park: p.id,
            by_ms: crate::MAX_PARKING_MS + 1,
        };
        assert!(matches!(
            o.apply(0, &far),
            Err(Rejection::OutOfRange { .. })
        ));
    }
}
