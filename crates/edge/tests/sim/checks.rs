//! What is checked after a run, on what the phones saw against the registry's committed
//! history: the registry's own invariants, who held and heard each caller, what a retriever
//! was told it got, recalls, lamps; and the summary line.

use crate::*;

/// The committed history: (index, stamped time, event).
pub(crate) fn history(node: &SimNode) -> Vec<(u64, Millis, Event)> {
    node.state
        .events
        .lock()
        .unwrap()
        .iter()
        .flat_map(|a| a.done.iter().map(|(_, e)| (a.index, a.at, e.clone())))
        .collect()
}

/// Whether an event changes what a slot holds.
pub(crate) fn moves_slots(ev: &Event) -> bool {
    !ev.slots().is_empty() && !matches!(ev, Event::Expired(_) | Event::RecallStage(_))
}

/// Everything checked after a run; the summary line.
pub(crate) fn check(
    seed: u64,
    sim: &Sim,
    hist: &[(u64, Millis, Event)],
    orbit: &Orbit,
    finished: Millis,
) -> Summary {
    let obs = &sim.obs;
    // The registry's own invariants: one call per slot, one claim per park.
    let mut slots: HashMap<u32, ParkId> = HashMap::new();
    let mut parks: HashMap<ParkId, orbit_state::Parked> = HashMap::new();
    let mut by_label: HashMap<String, Vec<ParkId>> = HashMap::new();
    let mut claims: HashMap<ParkId, String> = HashMap::new();
    let mut expired: HashMap<ParkId, Millis> = HashMap::new();
    // Caller (the ring's caller display: its label) → who picked its call up (`site/ext`).
    let mut picked: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut lapses = 0;
    for (i, _, ev) in hist {
        match ev {
            Event::Parked(p) => {
                assert!(
                    slots.insert(p.slot, p.id).is_none(),
                    "seed {seed}, index {i}: slot {} holds two calls",
                    p.slot
                );
                let label = p.call.caller_display.clone().unwrap_or_default();
                by_label.entry(label).or_default().push(p.id);
                parks.insert(p.id, p.clone());
            }
            Event::Claimed { parked, by } => {
                assert!(
                    claims.insert(parked.id, by.clone()).is_none(),
                    "seed {seed}, index {i}: park {} claimed twice",
                    parked.id
                );
                assert_eq!(
                    slots.remove(&parked.slot),
                    Some(parked.id),
                    "seed {seed}, index {i}"
                );
            }
            Event::Expired(p) => {
                let Phase::Recalling { since, .. } = p.phase else {
                    panic!("seed {seed}, index {i}: expired but not recalling")
                };
                assert!(since >= p.deadline, "seed {seed}, index {i}: expired early");
                assert!(
                    expired.insert(p.id, since).is_none(),
                    "seed {seed}, index {i}: park {} expired twice",
                    p.id
                );
            }
            Event::Ended { parked, .. } => {
                assert_eq!(
                    slots.remove(&parked.slot),
                    Some(parked.id),
                    "seed {seed}, index {i}"
                );
            }
            Event::PickedUp {
                ringing,
                by,
                parked,
            } => {
                let label = ringing.call.caller_display.clone().unwrap_or_default();
                let ext = by.rsplit('/').next().unwrap_or("").to_string();
                if let Some(p) = parked {
                    // A recall picked up: its park claimed by the picker, as a retrieve's.
                    assert!(
                        claims.insert(p.id, ext.clone()).is_none(),
                        "seed {seed}, index {i}: park {} claimed twice",
                        p.id
                    );
                    assert_eq!(slots.remove(&p.slot), Some(p.id), "seed {seed}, index {i}");
                }
                picked.entry(label).or_default().insert(ext);
            }
            Event::LeaseLapsed { lost, .. } | Event::EdgeRestarted { lost, .. } => {
                lapses += 1;
                for p in lost {
                    slots.remove(&p.slot);
                }
            }
            _ => {}
        }
    }

    // Every retrieve answered was told whom it got, by the edge holding the call (over the
    // trunk for a call held at another site): the slot it dialled, the caller's name and URI.
    let mut confirmed = 0;
    for r in obs
        .retrieves
        .iter()
        .filter(|r| r.done.is_some_and(|d| d.0 < 300))
    {
        let (Some(label), Some((slot, user))) = (&r.label, &r.named) else {
            panic!(
                "seed {seed}: {}'s retrieve of {} answered without naming the caller",
                r.ext, r.slot
            )
        };
        assert_eq!(
            *slot, r.slot,
            "seed {seed}: {} dialled {} and was told it got {label} from {slot}",
            r.ext, r.slot
        );
        assert!(
            label.starts_with(&format!("c{user}n")),
            "seed {seed}: {} was told it got {label}, whose URI is {user}'s",
            r.ext
        );
        if r.reached.as_ref() == Some(label) {
            confirmed += 1;
        }
    }

    // Every pickup answered was told whom it got (the caller's name and URI), by the edge
    // holding the call.
    for p in obs
        .pickups
        .iter()
        .filter(|p| p.done.is_some_and(|d| d.0 < 300))
    {
        let (Some(label), Some(user)) = (&p.label, &p.user) else {
            panic!(
                "seed {seed}: {}'s pickup ({}) answered without naming the caller",
                p.ext, p.dialled
            )
        };
        assert!(
            label.starts_with(&format!("c{user}n")),
            "seed {seed}: {} was told it picked up {label}, whose URI is {user}'s",
            p.ext
        );
        for other in [&p.reached, &p.heard_by].into_iter().flatten() {
            assert_eq!(
                label, other,
                "seed {seed}: {} was told it picked up {label} and its greeting reached {other}",
                p.ext
            );
        }
    }

    // Every caller held by one phone at most, which won the claim (or the pickup); the caller
    // hears only it.
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (label, ext, _) in &obs.holders {
        holders.entry(label).or_default().insert(ext);
    }
    for (label, exts) in &holders {
        assert!(
            exts.len() <= 1,
            "seed {seed}: caller {label} held by {exts:?} at once"
        );
        let claimants: BTreeSet<&str> = by_label
            .get(*label)
            .into_iter()
            .flatten()
            // A retrieve's claim names `edge/retriever`.
            .filter_map(|p| claims.get(p).map(|by| by.rsplit('/').next().unwrap_or(by)))
            .chain(picked.get(*label).into_iter().flatten().map(String::as_str))
            .collect();
        for ext in exts {
            assert!(
                claimants.contains(ext),
                "seed {seed}: {ext} got caller {label} without winning its claim (claimants {claimants:?})"
            );
        }
    }
    let mut heard: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (label, ext) in &obs.heard {
        heard.entry(label).or_default().insert(ext);
    }
    for (label, exts) in &heard {
        assert!(
            exts.len() <= 1,
            "seed {seed}: caller {label} heard {exts:?}"
        );
        let held = holders.get(label).cloned().unwrap_or_default();
        assert!(
            exts.is_subset(&held),
            "seed {seed}: caller {label} heard {exts:?}, held by {held:?}"
        );
    }
    // The caller a retriever's 200 named is the one it greeted and heard back.
    for r in &obs.retrieves {
        for other in [&r.reached, &r.heard_by].into_iter().flatten() {
            assert_eq!(
                r.label.as_ref(),
                Some(other),
                "seed {seed}: {} was told it got {:?} and its greeting reached {other}",
                r.ext,
                r.label
            );
        }
    }

    // Recalls: for a committed expiry, never before the deadline, once per park. A recall is
    // the latest of its caller's parks in that slot whose expiry was committed before the
    // recall reached the phone: an edge whose watch lags rings for a park it sees expired
    // while the log has moved on (claimed, parked again), and stops when its watch shows it.
    let mut recalled: HashMap<ParkId, BTreeSet<&str>> = HashMap::new();
    for r in &obs.recalls {
        let mine = by_label
            .get(&r.label)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let in_slot = || {
            mine.iter()
                .map(|id| &parks[id])
                .filter(|p| p.slot == r.slot && p.parked_at <= r.at)
        };
        let park = in_slot()
            .filter(|p| expired.get(&p.id).is_some_and(|at| *at <= r.at))
            .max_by_key(|p| p.parked_at)
            .or_else(|| in_slot().max_by_key(|p| p.parked_at))
            .unwrap_or_else(|| {
                panic!(
                    "seed {seed}: {} recalled for {} in {}, never parked there",
                    r.ext, r.label, r.slot
                )
            });
        assert!(
            r.at >= park.deadline,
            "seed {seed}: park {} recalled at {} (at {}, call {}) before its deadline {}; the caller's history: {:#?}",
            park.id,
            r.at,
            r.ext,
            r.call_id,
            park.deadline,
            about(hist, &r.label)
        );
        assert!(
            expired.contains_key(&park.id),
            "seed {seed}: park {} recalled without a committed expiry",
            park.id
        );
        recalled.entry(park.id).or_default().insert(&r.call_id);
    }
    for (park, calls) in &recalled {
        assert!(
            calls.len() <= 1,
            "seed {seed}: park {park} recalled {} times",
            calls.len()
        );
    }

    // Lamps: every phone shows the registry's state of every slot.
    for p in sim.phones.iter().filter(|p| p.role == Role::Colleague) {
        for slot in SLOTS {
            let want = orbit.in_slot(DOMAIN, slot).map(|p| p.id);
            let shown = p.lamps.get(&slot).and_then(|l| l.1);
            let replica = sim.edges[p.site]
                .orbit()
                .in_slot(DOMAIN, slot)
                .map(|p| p.id);
            let w = &sim.watches[p.site];
            assert_eq!(
                shown, want,
                "seed {seed}: {} at {} shows {shown:?} on {slot} (lamp {:?}), the registry {want:?}; the edge's replica {replica:?}, its watch at {} on node {:?}; history of the slot: {:#?}",
                p.ext, SITE_NAMES[p.site], p.lamps.get(&slot), w.after, w.node,
                hist.iter().filter(|(_, _, e)| e.slots().iter().any(|s| s.1 == slot)).collect::<Vec<_>>()
            );
        }
    }

    let end = check_liveness(seed, sim, hist, orbit);
    // Calls parked again by their holding edge after a claim of them went unfetched.
    let call_of = |e: &Event| match e {
        Event::Parked(p) | Event::Expired(p) | Event::RecallStage(p) => {
            Some(p.call.call_id.clone())
        }
        Event::Claimed { parked: p, .. } | Event::Ended { parked: p, .. } => {
            Some(p.call.call_id.clone())
        }
        _ => None,
    };
    let back = hist
        .iter()
        .enumerate()
        .filter(|(k, (_, at, e))| {
            let Event::Parked(p) = e else { return false };
            let before = hist[..*k]
                .iter()
                .rev()
                .find(|(_, _, e)| call_of(e).as_ref() == Some(&p.call.call_id));
            matches!(before, Some((_, t, Event::Claimed { .. })) if at - t >= FETCH_WAIT.as_millis() as u64)
        })
        .count();

    // Something happened.
    let retrieved = obs
        .retrieves
        .iter()
        .filter(|r| r.done.is_some_and(|d| d.0 < 300))
        .count();
    let cross = obs
        .retrieves
        .iter()
        .filter(|r| r.done.is_some_and(|d| d.0 < 300))
        .filter(|r| {
            let holder = r
                .label
                .as_ref()
                .and_then(|l| by_label.get(l))
                .and_then(|ids| ids.first())
                .map(|id| parks[id].call.edge.clone());
            holder.is_some_and(|e| e != SITE_NAMES[r.site])
        })
        .count();
    // Retrieves of one slot that were under way at once, from different sites.
    let mut fights = 0;
    for (i, a) in obs.retrieves.iter().enumerate() {
        let a_end = a.done.map_or(finished, |d| d.1);
        if obs.retrieves.iter().enumerate().any(|(j, b)| {
            i != j
                && a.slot == b.slot
                && a.site != b.site
                && b.sent <= a_end
                && a.sent <= b.done.map_or(finished, |d| d.1)
        }) {
            fights += 1;
        }
    }
    let pickups_got = obs
        .pickups
        .iter()
        .filter(|p| p.done.is_some_and(|d| d.0 < 300))
        .count();
    // Pickups of the same receptionist's calls under way at once, from different sites.
    let mut pickup_fights = 0;
    for (i, a) in obs.pickups.iter().enumerate() {
        let a_end = a.done.map_or(finished, |d| d.1);
        if obs.pickups.iter().enumerate().any(|(j, b)| {
            i != j
                && a.site != b.site
                && b.sent <= a_end
                && a.sent <= b.done.map_or(finished, |d| d.1)
        }) {
            pickup_fights += 1;
        }
    }
    let recall_kept = obs.recalls_kept;
    let line = format!(
        "seed {seed}: {} calls, {} parked ({} park failures), {} retrieves ({retrieved} got the call, {confirmed} of them named by the 200 as the caller who answered the greeting, {cross} across sites, {fights} in fights, {} cancelled), {} pickups ({pickups_got} got the call, {pickup_fights} at once with another site's), {} recalls ({recall_kept} kept), {} claims, {lapses} leases lapsed, {} entries; faults: {} ({} leader crashes, edge cuts registry/home/trunk {:?}); {} resyncs; {} trunk claims lost ({back} calls back in their slot after an unfetched claim); {} parks left; at the end {} callers connected, {} parked, {} being recalled",
        obs.calls,
        parks.len(),
        obs.park_failed,
        obs.retrieves.len(),
        obs.retrieves.iter().filter(|r| r.cancelled).count(),
        obs.pickups.len(),
        obs.recalls.len(),
        claims.len(),
        hist.last().map_or(0, |h| h.0),
        sim.faults,
        sim.leader_kills,
        sim.edge_cuts,
        sim.resyncs,
        sim.lost_claims.len(),
        orbit.all_parked().count(),
        end.connected,
        end.parked,
        end.recalling,
    );
    assert!(
        parks.len() >= 20
            && retrieved >= 10
            && cross >= 3
            && fights >= 2
            && obs.recalls.len() >= 3
            && pickups_got >= 2
            && sim.faults >= 10
            && sim.leader_kills >= 1,
        "seed {seed}: not a history worth checking: {line}"
    );
    Summary { line }
}
