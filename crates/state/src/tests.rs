//! The orbit state in virtual time: every test passes the clock in as a number.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};

use super::*;

const T0: Millis = 1_800_000_000_000;

pub(crate) fn lot(choice: SlotChoice) -> LotConfig {
    LotConfig {
        tenant: "example.com".into(),
        park_ext: "700".into(),
        first_slot: 701,
        last_slot: 703,
        parking_ms: 90_000,
        recall_ring_ms: 20_000,
        fallback: Some("1001".into()),
        choice,
    }
}

pub(crate) fn key() -> LotKey {
    lot(SlotChoice::FirstFree).key()
}

pub(crate) fn call(n: u32) -> CallInfo {
    CallInfo {
        caller_uri: format!("sip:{n}@example.com"),
        caller_display: Some(format!("Caller {n}")),
        parker: "1002".into(),
        edge: "site-a".into(),
        call_id: format!("call-{n}"),
        local_tag: format!("l{n}"),
        remote_tag: format!("r{n}"),
        codec: None,
        trace: None,
    }
}

pub(crate) fn orbit(choice: SlotChoice) -> Orbit {
    let mut o = Orbit::new();
    o.apply(T0, &Command::SetLot(lot(choice))).unwrap();
    o
}

fn park(o: &mut Orbit, now: Millis, slot: Option<u32>, n: u32) -> Result<Parked, Rejection> {
    match o.apply(
        now,
        &Command::Park {
            lot: key(),
            slot,
            call: call(n),
        },
    )? {
        Event::Parked(p) => Ok(p),
        e => panic!("unexpected {e:?}"),
    }
}

fn claim(o: &mut Orbit, slot: u32, park: Option<ParkId>) -> Result<Event, Rejection> {
    o.apply(
        T0,
        &Command::Claim {
            tenant: "example.com".into(),
            slot,
            park,
            by: "2001".into(),
        },
    )
}

#[test]
fn park_takes_the_first_free_slot_and_sets_the_deadline() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    assert_eq!(
        (p.slot, p.deadline, p.phase),
        (701, T0 + 90_000, Phase::Waiting)
    );
    assert_eq!(park(&mut o, T0 + 5, None, 2).unwrap().slot, 702);
    // 701 freed: the next park takes it again.
    claim(&mut o, 701, None).unwrap();
    assert_eq!(park(&mut o, T0 + 9, None, 3).unwrap().slot, 701);
    assert_eq!(o.next_deadline(), Some((T0 + 5 + 90_000, 2)));
}

#[test]
fn next_after_last_wraps_round_the_lot() {
    let mut o = orbit(SlotChoice::NextAfterLast);
    assert_eq!(park(&mut o, T0, None, 1).unwrap().slot, 701);
    claim(&mut o, 701, None).unwrap();
    assert_eq!(park(&mut o, T0, None, 2).unwrap().slot, 702);
    assert_eq!(park(&mut o, T0, None, 3).unwrap().slot, 703);
    // After 703 it wraps to the lowest free one.
    assert_eq!(park(&mut o, T0, None, 4).unwrap().slot, 701);
}

#[test]
fn explicit_slot_taken_slot_and_non_slot() {
    let mut o = orbit(SlotChoice::FirstFree);
    assert_eq!(park(&mut o, T0, Some(703), 1).unwrap().slot, 703);
    assert_eq!(
        park(&mut o, T0, Some(703), 2),
        Err(Rejection::SlotTaken(703))
    );
    assert_eq!(
        park(&mut o, T0, Some(704), 2),
        Err(Rejection::NotASlot(704))
    );
    // The refusals changed nothing: 703 still holds call 1.
    assert_eq!(o.in_slot("example.com", 703).unwrap().call, call(1));
    assert_eq!(o.all_parked().count(), 1);
}

#[test]
fn full_lot_is_refused_and_nothing_is_lost() {
    let mut o = orbit(SlotChoice::FirstFree);
    for n in 0..3 {
        park(&mut o, T0, None, n).unwrap();
    }
    assert_eq!(park(&mut o, T0, None, 9), Err(Rejection::LotFull));
    let mut held: Vec<_> = o
        .occupied(&key())
        .map(|p| (p.slot, p.call.call_id.clone()))
        .collect();
    held.sort();
    assert_eq!(
        held,
        vec![
            (701, "call-0".to_string()),
            (702, "call-1".to_string()),
            (703, "call-2".to_string())
        ]
    );
}

#[test]
fn retrieve_claims_once_and_frees_the_slot() {
    let mut o = orbit(SlotChoice::FirstFree);
    assert_eq!(claim(&mut o, 701, None), Err(Rejection::Empty(701)));
    assert_eq!(claim(&mut o, 799, None), Err(Rejection::NotASlot(799)));
    let p = park(&mut o, T0, None, 1).unwrap();
    match claim(&mut o, 701, None).unwrap() {
        Event::Claimed { parked, by } => assert_eq!((parked.id, by.as_str()), (p.id, "2001")),
        e => panic!("{e:?}"),
    }
    assert_eq!(claim(&mut o, 701, None), Err(Rejection::Empty(701)));
    assert!(o.in_slot("example.com", 701).is_none());
    // Its deadline went with it.
    assert_eq!(o.next_deadline(), None);
    assert_eq!(
        o.apply(T0 + 90_000, &Command::Expire { park: p.id }),
        Err(Rejection::Gone(p.id))
    );
}

#[test]
fn retrieve_racing_the_recall_one_wins() {
    // Retriever first: the recall's claim for its own park fails.
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    o.apply(p.deadline, &Command::Expire { park: p.id })
        .unwrap();
    assert!(matches!(
        o.in_slot("example.com", 701).unwrap().phase,
        Phase::Recalling { .. }
    ));
    claim(&mut o, 701, None).unwrap();
    assert_eq!(claim(&mut o, 701, Some(p.id)), Err(Rejection::Gone(p.id)));

    // Recall first: the retriever finds the slot empty.
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    o.apply(p.deadline, &Command::Expire { park: p.id })
        .unwrap();
    claim(&mut o, 701, Some(p.id)).unwrap();
    assert_eq!(claim(&mut o, 701, None), Err(Rejection::Empty(701)));

    // A recall that lost must not take a newer call parked in the same slot.
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    claim(&mut o, 701, None).unwrap();
    let q = park(&mut o, T0 + 1, None, 2).unwrap();
    assert_eq!(q.slot, 701);
    assert_eq!(claim(&mut o, 701, Some(p.id)), Err(Rejection::Gone(p.id)));
    assert_eq!(o.in_slot("example.com", 701).unwrap().id, q.id);
}

#[test]
fn hang_up_while_parked_frees_the_slot_at_once() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    let ev = o
        .apply(
            T0 + 10,
            &Command::End {
                park: p.id,
                reason: EndReason::HungUp,
            },
        )
        .unwrap();
    assert!(matches!(
        ev,
        Event::Ended {
            reason: EndReason::HungUp,
            ..
        }
    ));
    assert!(o.in_slot("example.com", 701).is_none());
    assert_eq!(o.next_deadline(), None);
    assert!(o.due(p.deadline + 1).is_empty());
    assert_eq!(park(&mut o, T0 + 11, None, 2).unwrap().slot, 701);
}

#[test]
fn deadline_fires_exactly_at_the_deadline_and_once() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0 + 123, None, 1).unwrap();
    let q = park(&mut o, T0 + 456, None, 2).unwrap();
    // Step a virtual clock 1 ms at a time over the interesting window, firing what is due.
    let mut fired: Vec<(ParkId, Millis)> = vec![];
    for now in (p.deadline - 50)..(q.deadline + 50) {
        for id in o.due(now) {
            o.apply(now, &Command::Expire { park: id }).unwrap();
            fired.push((id, now));
        }
        // A second attempt in the same millisecond (a duplicate timer) does nothing.
        for id in [p.id, q.id] {
            let r = o.apply(now, &Command::Expire { park: id });
            assert!(r.is_err(), "expired twice at {now}");
        }
    }
    assert_eq!(fired, vec![(p.id, p.deadline), (q.id, q.deadline)]);
    // Never early: one millisecond before is refused.
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    assert_eq!(
        o.apply(p.deadline - 1, &Command::Expire { park: p.id }),
        Err(Rejection::NotDue {
            park: p.id,
            deadline: p.deadline
        })
    );
    assert!(o.due(p.deadline - 1).is_empty());
    assert_eq!(o.due(p.deadline), vec![p.id]);
}

#[test]
fn recall_stages_need_a_recall() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    let stage = |o: &mut Orbit, now| {
        o.apply(
            now,
            &Command::RecallStage {
                park: p.id,
                stage: RecallStage::Fallback,
            },
        )
    };
    assert_eq!(stage(&mut o, T0), Err(Rejection::NotRecalling(p.id)));
    o.apply(p.deadline, &Command::Expire { park: p.id })
        .unwrap();
    let ev = stage(&mut o, p.deadline + 20_000).unwrap();
    match ev {
        Event::RecallStage(q) => assert_eq!(
            q.phase,
            Phase::Recalling {
                stage: RecallStage::Fallback,
                since: p.deadline + 20_000
            }
        ),
        e => panic!("{e:?}"),
    }
    // Still in its slot (retrievable) until someone answers or it is abandoned.
    assert_eq!(o.in_slot("example.com", 701).unwrap().id, p.id);
    o.apply(
        p.deadline + 40_000,
        &Command::End {
            park: p.id,
            reason: EndReason::Abandoned,
        },
    )
    .unwrap();
    assert!(o.in_slot("example.com", 701).is_none());
}

#[test]
fn lot_configuration_errors() {
    let mut o = orbit(SlotChoice::FirstFree);
    let mut bad = lot(SlotChoice::FirstFree);
    bad.park_ext = "702".into();
    assert!(matches!(
        o.apply(T0, &Command::SetLot(bad)),
        Err(Rejection::BadLot(_))
    ));
    let mut overlap = lot(SlotChoice::FirstFree);
    overlap.park_ext = "800".into();
    overlap.first_slot = 703;
    overlap.last_slot = 710;
    assert!(matches!(
        o.apply(T0, &Command::SetLot(overlap.clone())),
        Err(Rejection::BadLot(_))
    ));
    overlap.first_slot = 801;
    overlap.last_slot = 810;
    o.apply(T0, &Command::SetLot(overlap.clone())).unwrap();
    // Another tenant may use the same numbers.
    let mut other = lot(SlotChoice::FirstFree);
    other.tenant = "other.example".into();
    o.apply(T0, &Command::SetLot(other)).unwrap();
    // Shrinking a lot under a parked call is refused; shrinking around it is fine.
    park(&mut o, T0, Some(703), 1).unwrap();
    let mut small = lot(SlotChoice::FirstFree);
    small.last_slot = 702;
    assert!(matches!(
        o.apply(T0, &Command::SetLot(small.clone())),
        Err(Rejection::BadLot(_))
    ));
    small.first_slot = 703;
    small.last_slot = 705;
    o.apply(T0, &Command::SetLot(small)).unwrap();
    assert_eq!(o.in_slot("example.com", 703).unwrap().call, call(1));
    // Zero times and inverted ranges.
    let mut z = lot(SlotChoice::FirstFree);
    z.parking_ms = 0;
    assert!(z.validate().is_err());
    z = lot(SlotChoice::FirstFree);
    z.first_slot = 710;
    assert!(z.validate().is_err());
}

/// Random commands at random (monotonic) times against the invariants: a slot holds at most
/// one call, a park is claimed or ended at most once, Expire never fires before the deadline
/// and at most once per park, and every event agrees with the state.
#[test]
fn random_commands_keep_the_invariants() {
    for seed in 0..200u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut o = orbit(if seed % 2 == 0 {
            SlotChoice::FirstFree
        } else {
            SlotChoice::NextAfterLast
        });
        let mut now = T0;
        let mut expired: HashSet<ParkId> = HashSet::new();
        let mut finished: HashSet<ParkId> = HashSet::new();
        let mut deadline: HashMap<ParkId, Millis> = HashMap::new();
        for n in 0..300u32 {
            now += rng.gen_range(0..40_000);
            let known: Vec<ParkId> = deadline.keys().copied().collect();
            let any_park = |rng: &mut rand::rngs::StdRng| {
                if known.is_empty() {
                    1
                } else {
                    known[rng.gen_range(0..known.len())]
                }
            };
            let cmd = match rng.gen_range(0..6) {
                0 | 1 => Command::Park {
                    lot: key(),
                    slot: rng.gen_bool(0.3).then(|| rng.gen_range(700..705)),
                    call: call(n),
                },
                2 => Command::Claim {
                    tenant: "example.com".into(),
                    slot: rng.gen_range(700..705),
                    park: rng.gen_bool(0.5).then(|| any_park(&mut rng)),
                    by: "x".into(),
                },
                3 => Command::Expire {
                    park: any_park(&mut rng),
                },
                4 => Command::End {
                    park: any_park(&mut rng),
                    reason: EndReason::HungUp,
                },
                _ => Command::RecallStage {
                    park: any_park(&mut rng),
                    stage: RecallStage::Fallback,
                },
            };
            match o.apply(now, &cmd) {
                Ok(Event::Parked(p)) => {
                    assert!(
                        deadline.insert(p.id, p.deadline).is_none(),
                        "park id reused"
                    );
                    assert!((701..=703).contains(&p.slot));
                }
                Ok(Event::Expired(p)) => {
                    assert!(now >= deadline[&p.id], "seed {seed}: expired early");
                    assert!(expired.insert(p.id), "seed {seed}: expired twice");
                }
                Ok(Event::Claimed { parked, .. }) | Ok(Event::Ended { parked, .. }) => {
                    assert!(finished.insert(parked.id), "seed {seed}: claimed twice");
                }
                Ok(_) | Err(_) => {}
            }
            // State agrees with the history.
            let mut slots = HashSet::new();
            for p in o.all_parked() {
                assert!(
                    slots.insert(p.slot),
                    "seed {seed}: slot {} holds two calls",
                    p.slot
                );
                assert!(!finished.contains(&p.id));
                assert_eq!(p.phase == Phase::Waiting, !expired.contains(&p.id));
                assert_eq!(o.in_slot("example.com", p.slot).map(|q| q.id), Some(p.id));
            }
            for id in o.due(now) {
                assert!(deadline[&id] <= now && !expired.contains(&id));
            }
        }
    }
}

#[test]
fn serialised_state_behaves_the_same() {
    let mut o = orbit(SlotChoice::NextAfterLast);
    let p = park(&mut o, T0, None, 1).unwrap();
    let q = park(&mut o, T0 + 10, None, 2).unwrap();
    o.apply(p.deadline, &Command::Expire { park: p.id })
        .unwrap();
    let json = serde_json::to_string(&o).unwrap();
    let mut back: Orbit = serde_json::from_str(&json).unwrap();
    // Same deadlines pending (only q is still waiting), same next slot, same park ids.
    assert_eq!(back.next_deadline(), Some((q.deadline, q.id)));
    assert_eq!(back.due(q.deadline), vec![q.id]);
    let r = park(&mut back, T0 + 20, None, 3).unwrap();
    let r2 = park(&mut o, T0 + 20, None, 3).unwrap();
    assert_eq!(r, r2);
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&o).unwrap()
    );
}

#[test]
fn a_lapsed_lease_loses_that_edges_parked_calls_and_frees_their_slots() {
    let mut o = orbit(SlotChoice::FirstFree);
    let lease = |o: &mut Orbit, now, edge: &str| {
        o.apply(
            now,
            &Command::Lease {
                edge: edge.into(),
                ttl_ms: 10_000,
                incarnation: 0,
                replaces: 0,
                sip: None,
                load: Default::default(),
            },
        )
    };
    let lapse =
        |o: &mut Orbit, now, edge: &str| o.apply(now, &Command::LeaseLapse { edge: edge.into() });
    assert_eq!(
        lease(&mut o, T0, "site-a"),
        Ok(Event::LeaseGranted {
            edge: "site-a".into(),
            until: T0 + 10_000
        })
    );
    lease(&mut o, T0, "site-b").unwrap();
    let a1 = park(&mut o, T0, None, 1).unwrap(); // call(n) is held by site-a
    let mut b = call(2);
    b.edge = "site-b".into();
    let b1 = match o
        .apply(
            T0,
            &Command::Park {
                lot: key(),
                slot: None,
                call: b,
            },
        )
        .unwrap()
    {
        Event::Parked(p) => p,
        e => panic!("{e:?}"),
    };
    // Renewed in time: the lapse that was due is refused.
    lease(&mut o, T0 + 9_000, "site-a").unwrap();
    assert_eq!(
        lapse(&mut o, T0 + 10_000, "site-a"),
        Err(Rejection::LeaseLive {
            edge: "site-a".into(),
            until: T0 + 19_000
        })
    );
    assert_eq!(o.lapsed(T0 + 10_000), vec!["site-b".to_string()]);
    // site-b's lease runs out: its call is lost, its slot free, its deadline gone.
    match lapse(&mut o, T0 + 10_000, "site-b").unwrap() {
        Event::LeaseLapsed {
            edge,
            lost,
            rings,
            released,
        } => {
            assert!(!released);
            assert_eq!(edge, "site-b");
            assert!(rings.is_empty());
            assert_eq!(lost.iter().map(|p| p.id).collect::<Vec<_>>(), vec![b1.id]);
        }
        e => panic!("{e:?}"),
    }
    assert!(o.in_slot("example.com", b1.slot).is_none());
    assert_eq!(o.in_slot("example.com", a1.slot).unwrap().id, a1.id);
    assert_eq!(o.next_deadline(), Some((a1.deadline, a1.id)));
    // Once: a second lapse finds no lease.
    assert_eq!(
        lapse(&mut o, T0 + 10_001, "site-b"),
        Err(Rejection::NoLease("site-b".into()))
    );
    // The lamps of the lost slots change.
    let ev = Event::LeaseLapsed {
        edge: "x".into(),
        lost: vec![a1.clone(), b1.clone()],
        rings: vec![],
        released: false,
    };
    assert_eq!(ev.slots().len(), 2);
}

#[test]
fn a_draining_edge_is_marked_until_it_leaves_and_only_its_own_process_leaves() {
    let mut o = orbit(SlotChoice::FirstFree);
    let lease = |o: &mut Orbit, now, incarnation| {
        o.apply(
            now,
            &Command::Lease {
                edge: "site-a".into(),
                ttl_ms: 10_000,
                incarnation,
                replaces: 0,
                sip: None,
                load: Default::default(),
            },
        )
    };
    let drain = Command::Drain {
        edge: "site-a".into(),
    };
    // No lease, nothing to drain.
    assert_eq!(
        o.apply(T0, &drain),
        Err(Rejection::NoLease("site-a".into()))
    );
    lease(&mut o, T0, 7).unwrap();
    let p = park(&mut o, T0, None, 1).unwrap(); // held by site-a
    assert!(!o.is_draining("site-a"));
    assert_eq!(
        o.apply(T0 + 1, &drain),
        Ok(Event::Draining {
            edge: "site-a".into()
        })
    );
    assert!(o.is_draining("site-a"));
    // Renewing the lease while draining keeps it draining.
    lease(&mut o, T0 + 2, 7).unwrap();
    assert!(o.is_draining("site-a"));
    // Another process's word does not end the lease.
    let release = |incarnation| Command::Release {
        edge: "site-a".into(),
        incarnation,
    };
    assert!(matches!(
        o.apply(T0 + 3, &release(8)),
        Err(Rejection::IdentityInUse { holder: 7, .. })
    ));
    assert_eq!(o.in_slot("example.com", p.slot).unwrap().id, p.id);
    // Its own does: lease, mark and whatever it still held, at once.
    match o.apply(T0 + 4, &release(7)).unwrap() {
        Event::LeaseLapsed {
            edge,
            lost,
            released,
            ..
        } => {
            assert_eq!(edge, "site-a");
            assert!(released);
            assert_eq!(lost.iter().map(|l| l.id).collect::<Vec<_>>(), vec![p.id]);
        }
        e => panic!("{e:?}"),
    }
    assert!(!o.is_draining("site-a"));
    assert_eq!(o.leases().count(), 0);
    assert_eq!(
        o.apply(T0 + 5, &release(7)),
        Err(Rejection::NoLease("site-a".into()))
    );
    // A new process after it starts afresh, not draining.
    lease(&mut o, T0 + 6, 9).unwrap();
    assert!(!o.is_draining("site-a"));
}

#[test]
fn a_new_incarnation_is_refused_while_another_holds_the_lease_unless_it_replaces_it() {
    let mut o = orbit(SlotChoice::FirstFree);
    let lease = |o: &mut Orbit, now, incarnation, replaces| {
        o.apply(
            now,
            &Command::Lease {
                edge: "site-a".into(),
                ttl_ms: 10_000,
                incarnation,
                replaces,
                sip: Some("192.0.2.1:5060".parse().unwrap()),
                load: Default::default(),
            },
        )
    };
    lease(&mut o, T0, 7, 0).unwrap();
    assert_eq!(
        o.trunk_of("site-a", T0),
        Some("192.0.2.1:5060".parse().unwrap())
    );
    // Not once the lease has run out (before its lapse is ordered).
    assert_eq!(o.trunk_of("site-a", T0 + 10_000), None);
    // An address nobody can reach is refused, and changes nothing.
    let nowhere = Command::Lease {
        edge: "site-a".into(),
        ttl_ms: 10_000,
        incarnation: 7,
        replaces: 0,
        sip: Some("0.0.0.0:5060".parse().unwrap()),
        load: Default::default(),
    };
    assert_eq!(
        o.apply(T0, &nowhere),
        Err(Rejection::BadAddress("0.0.0.0:5060".into()))
    );
    let p = park(&mut o, T0, None, 1).unwrap(); // held by site-a
                                                // The same process renewing: nothing changes.
    assert!(matches!(
        lease(&mut o, T0 + 3_000, 7, 0),
        Ok(Event::LeaseGranted { .. })
    ));
    assert_eq!(o.in_slot("example.com", p.slot).unwrap().id, p.id);
    // A second process configured with the same identity, while the first lives: refused,
    // and the first keeps its call and its lease.
    let before = serde_json::to_string(&o).unwrap();
    assert_eq!(
        lease(&mut o, T0 + 4_000, 8, 0),
        Err(Rejection::IdentityInUse {
            edge: "site-a".into(),
            holder: 7,
            until: T0 + 13_000
        })
    );
    assert_eq!(serde_json::to_string(&o).unwrap(), before);
    // The first process restarted and kept its predecessor's incarnation: it takes over at
    // once, and the call the old process held (its media died with it) is lost now.
    match lease(&mut o, T0 + 4_000, 9, 7).unwrap() {
        Event::EdgeRestarted {
            edge,
            until,
            lost,
            rings,
        } => {
            assert_eq!((edge.as_str(), until), ("site-a", T0 + 14_000));
            assert!(rings.is_empty());
            assert_eq!(lost.iter().map(|l| l.id).collect::<Vec<_>>(), vec![p.id]);
        }
        e => panic!("{e:?}"),
    }
    assert!(o.in_slot("example.com", p.slot).is_none());
    assert_eq!(o.next_deadline(), None);
    // Its renewals from then on are ordinary; the one it replaced is now the stranger.
    assert!(matches!(
        lease(&mut o, T0 + 5_000, 9, 0),
        Ok(Event::LeaseGranted { .. })
    ));
    assert!(matches!(
        lease(&mut o, T0 + 5_000, 7, 0),
        Err(Rejection::IdentityInUse { holder: 9, .. })
    ));
    // Once the holder's lease has run out, a new process needs no proof (a crash without a
    // kept incarnation waits for the lease to end, then starts afresh).
    assert!(matches!(
        lease(&mut o, T0 + 15_000, 10, 0),
        Ok(Event::EdgeRestarted { .. })
    ));
    // Incarnation 0 (not said) never counts as another process.
    assert!(matches!(
        lease(&mut o, T0 + 16_000, 0, 0),
        Ok(Event::LeaseGranted { .. })
    ));
}

#[test]
fn registrations_are_located_by_edge_until_they_expire() {
    let mut o = orbit(SlotChoice::FirstFree);
    let locate = |o: &mut Orbit, now, edge: &str, until| {
        o.apply(
            now,
            &Command::Locate {
                tenant: "example.com".into(),
                ext: "1002".into(),
                edge: edge.into(),
                until,
            },
        )
        .unwrap()
    };
    locate(&mut o, T0, "site-a", T0 + 3_600_000);
    locate(&mut o, T0, "site-b", T0 + 60_000);
    assert_eq!(
        o.located("example.com", "1002", T0),
        vec!["site-a", "site-b"]
    );
    // Past its expiry a registration no longer counts.
    assert_eq!(
        o.located("example.com", "1002", T0 + 60_000),
        vec!["site-a"]
    );
    assert!(o.located("other.example", "1002", T0).is_empty());
    // The phone moved: un-registered at site-a, registered at site-b again.
    o.apply(
        T0 + 70_000,
        &Command::Unlocate {
            tenant: "example.com".into(),
            ext: "1002".into(),
            edge: "site-a".into(),
        },
    )
    .unwrap();
    locate(&mut o, T0 + 70_000, "site-b", T0 + 200_000);
    assert_eq!(
        o.located("example.com", "1002", T0 + 70_000),
        vec!["site-b"]
    );
    // Survives serialisation; a lapsed lease takes its edge's registrations with it.
    let mut back: Orbit = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert_eq!(
        back.located("example.com", "1002", T0 + 70_000),
        vec!["site-b"]
    );
    back.apply(
        T0,
        &Command::Lease {
            edge: "site-b".into(),
            ttl_ms: 1,
            incarnation: 0,
            replaces: 0,
            sip: None,
            load: Default::default(),
        },
    )
    .unwrap();
    back.apply(
        T0 + 80_000,
        &Command::LeaseLapse {
            edge: "site-b".into(),
        },
    )
    .unwrap();
    assert!(back.located("example.com", "1002", T0 + 80_000).is_empty());
}

#[test]
fn numbers_out_of_range_are_refused_not_wrapped() {
    let mut o = orbit(SlotChoice::FirstFree);
    let lease = |ttl_ms| Command::Lease {
        edge: "e".into(),
        ttl_ms,
        incarnation: 1,
        replaces: 0,
        sip: None,
        load: Default::default(),
    };
    for ttl in [0, MAX_LEASE_MS + 1, u64::MAX] {
        assert!(matches!(
            o.apply(1_000, &lease(ttl)),
            Err(Rejection::OutOfRange { .. })
        ));
    }
    assert!(
        o.apply(u64::MAX - 10, &lease(MAX_LEASE_MS)).is_ok(),
        "saturates, no panic"
    );
    let locate = |until| Command::Locate {
        tenant: "t".into(),
        ext: "1001".into(),
        edge: "e".into(),
        until,
    };
    assert!(matches!(
        o.apply(1_000, &locate(u64::MAX)),
        Err(Rejection::OutOfRange { .. })
    ));
    assert!(o.apply(1_000, &locate(1_000 + 3_600_000)).is_ok());
    for (parking_ms, recall_ring_ms) in [
        (MAX_PARKING_MS + 1, 1000),
        (1000, MAX_RING_MS + 1),
        (u64::MAX, 1000),
    ] {
        let mut cfg = lot(SlotChoice::FirstFree);
        cfg.parking_ms = parking_ms;
        cfg.recall_ring_ms = recall_ring_ms;
        assert!(matches!(
            o.apply(1_000, &Command::SetLot(cfg)),
            Err(Rejection::BadLot(_))
        ));
    }
}

mod recall_rings;
mod send;

#[test]
fn a_park_moves_to_a_live_edge_keeping_slot_and_deadline_and_races_a_claim_with_one_winner() {
    let mut o = orbit(SlotChoice::FirstFree);
    let lease = |o: &mut Orbit, edge: &str| {
        o.apply(
            T0,
            &Command::Lease {
                edge: edge.into(),
                ttl_ms: 60_000,
                incarnation: 0,
                replaces: 0,
                sip: None,
                load: Default::default(),
            },
        )
        .unwrap();
    };
    lease(&mut o, "site-a");
    let p = park(&mut o, T0, None, 1).unwrap(); // held by site-a
    let mv = |to: &str| Command::Move {
        park: p.id,
        to: to.into(),
    };
    // Nowhere without a lease, nor to its holder.
    assert_eq!(
        o.apply(T0 + 1, &mv("site-a/edge-2")),
        Err(Rejection::CannotMoveTo("site-a/edge-2".into()))
    );
    assert_eq!(
        o.apply(T0 + 1, &mv("site-a")),
        Err(Rejection::CannotMoveTo("site-a".into()))
    );
    lease(&mut o, "site-a/edge-2");
    lease(&mut o, "site-b");
    o.apply(
        T0,
        &Command::Drain {
            edge: "site-b".into(),
        },
    )
    .unwrap();
    // Not to a draining edge.
    assert_eq!(
        o.apply(T0 + 1, &mv("site-b")),
        Err(Rejection::CannotMoveTo("site-b".into()))
    );
    // Only its holder hands it over.
    assert!(matches!(
        o.apply_as(T0 + 1, Some("site-b"), &mv("site-a/edge-2")),
        Err(Rejection::NotYours { .. })
    ));
    match o
        .apply_as(T0 + 1, Some("site-a"), &mv("site-a/edge-2"))
        .unwrap()
    {
        Event::Moved { parked, from } => {
            assert_eq!(from, "site-a");
            assert_eq!(parked.call.edge, "site-a/edge-2");
            assert_eq!((parked.slot, parked.deadline), (p.slot, p.deadline));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(o.next_deadline(), Some((p.deadline, p.id)));
    // A claim now names the new holder; a move after it finds the park gone.
    match claim(&mut o, p.slot, None).unwrap() {
        Event::Claimed { parked, .. } => assert_eq!(parked.call.edge, "site-a/edge-2"),
        e => panic!("{e:?}"),
    }
    assert_eq!(o.apply(T0 + 2, &mv("site-a")), Err(Rejection::Gone(p.id)));
}
