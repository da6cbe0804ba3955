//! Liveness at the end of a run, from the phones' side: where every caller still in a call
//! is (connected, parked, being recalled), against the registry's final state; and the
//! claims the quiet period must outlast.

use crate::*;

/// When the claims were committed whose caller is still in its call, which no phone of the
/// claimant got and which was not parked again or ended since: the holding edge waits
/// `FETCH_WAIT` for the claimant's trunk INVITE from when its watch shows the claim, then
/// parks the call again.
pub(crate) fn unfetched_claims<'a>(
    hist: &'a [(u64, Millis, Event)],
    sim: &'a Sim,
) -> impl Iterator<Item = Millis> + 'a {
    hist.iter().filter_map(move |(i, at, e)| {
        let (label, by, call_id, ring) = match e {
            // A retrieve's claim names `edge/retriever`.
            Event::Claimed { parked, by } => (
                parked.call.caller_display.as_deref().unwrap_or(""),
                by.rsplit('/').next().unwrap_or(""),
                &parked.call.call_id,
                false,
            ),
            // A pickup whose picker never comes: the call rings on after the same wait.
            Event::PickedUp { ringing, by, .. } => (
                ringing.call.caller_display.as_deref().unwrap_or(""),
                by.rsplit('/').next().unwrap_or(""),
                &ringing.call.call_id,
                true,
            ),
            _ => return None,
        };
        let up = sim.phones.iter().any(|p| {
            p.dialogs
                .values()
                .any(|d| d.kind == Kind::Out && d.label == label && d.state != St::Done)
        });
        let got = sim
            .obs
            .holders
            .iter()
            .any(|(l, ext, _)| l == label && ext == by);
        let moved_on = hist.iter().any(|(j, _, e)| {
            j > i
                && match e {
                    Event::Parked(p) | Event::Ended { parked: p, .. } => p.call.call_id == *call_id,
                    // A picked-up ring recorded again, or over (the call's record of its answer
                    // ending is no news of a claim).
                    Event::Ringing(r) | Event::RingEnded { ringing: r } if ring => {
                        r.call.call_id == *call_id
                    }
                    _ => false,
                }
        });
        (up && !got && !moved_on).then_some(*at)
    })
}

/// Where the callers still in a call ended up.
pub(crate) struct End {
    pub(crate) connected: usize,
    pub(crate) parked: usize,
    pub(crate) recalling: usize,
}

/// Liveness, after healing and the quiet period, from the phones' side: every caller still in
/// a call is connected to exactly one phone (whose greeting it heard last, and which heard its
/// name back), or parked in a slot the registry's final state has (every lamp of that slot
/// showing it), or being recalled from there. No caller is left on music in a call the
/// registry has in no slot, and no phone is left holding a call whose caller is gone.
pub(crate) fn check_liveness(
    seed: u64,
    sim: &Sim,
    hist: &[(u64, Millis, Event)],
    orbit: &Orbit,
) -> End {
    // The calls the phones hold (a retrieve answered, a recall answered): caller → (phone,
    // whether the caller answered its greeting).
    let mut held: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for p in &sim.phones {
        for d in p.dialogs.values() {
            if matches!(d.kind, Kind::Retrieve(_) | Kind::Pickup(_) | Kind::Recall)
                && d.state == St::Up
            {
                held.entry(&d.label).or_default().push((&p.ext, d.reached));
            }
        }
    }
    let mut end = End {
        connected: 0,
        parked: 0,
        recalling: 0,
    };
    for p in sim.phones.iter().filter(|p| p.role == Role::Caller) {
        for d in p.dialogs.values() {
            if d.kind != Kind::Out || d.state == St::Done {
                continue;
            }
            let label = d.label.as_str();
            let park = orbit
                .all_parked()
                .find(|x| x.call.caller_display.as_deref() == Some(label));
            let holders = held.remove(label).unwrap_or_default();
            let ok = match (d.state, park, holders.as_slice()) {
                (St::Up, None, [(ext, true)]) if d.greeted.as_deref() == Some(*ext) => {
                    end.connected += 1;
                    true
                }
                (St::Up, Some(x), []) => {
                    for c in sim.phones.iter().filter(|c| c.role == Role::Colleague) {
                        let shown = c.lamps.get(&x.slot).and_then(|l| l.1);
                        assert_eq!(
                            shown,
                            Some(x.id),
                            "seed {seed}: caller {label} parked in {} (park {}), {}'s lamp shows {shown:?}",
                            x.slot,
                            x.id,
                            c.ext
                        );
                    }
                    match x.phase {
                        Phase::Waiting => end.parked += 1,
                        Phase::Recalling { .. } => end.recalling += 1,
                    }
                    true
                }
                _ => false,
            };
            if ok {
                continue;
            }
            let what = format!(
                "caller {label} ({}) left {:?} (on music if nobody holds it), last greeted by {:?}; held by {holders:?}; in the registry's final state: {:?}; its history: {:#?}",
                p.ext,
                d.state,
                d.greeted,
                park.map(|x| (x.id, x.slot, &x.phase)),
                about(hist, label)
            );
            panic!("seed {seed}: {what}");
        }
    }
    assert!(
        held.is_empty(),
        "seed {seed}: phones left holding calls whose caller is in none: {held:?}"
    );
    end
}

/// The committed events about caller `label`'s parks, briefly.
pub(crate) fn about(hist: &[(u64, Millis, Event)], label: &str) -> Vec<String> {
    let of = |p: &orbit_state::Parked| p.call.caller_display.as_deref() == Some(label);
    let mut out = vec![];
    for (i, at, ev) in hist {
        let what = match ev {
            Event::Parked(p) if of(p) => {
                format!("parked {} in {} at {}", p.id, p.slot, p.call.edge)
            }
            Event::Claimed { parked, by } if of(parked) => format!("{} claimed by {by}", parked.id),
            Event::Expired(p) if of(p) => format!("{} expired", p.id),
            Event::RecallStage(p) if of(p) => format!("{} recall stage", p.id),
            Event::Ended { parked, reason } if of(parked) => {
                format!("{} ended: {reason:?}", parked.id)
            }
            Event::LeaseLapsed { edge, lost, .. } | Event::EdgeRestarted { edge, lost, .. }
                if lost.iter().any(of) =>
            {
                format!("lost with {edge}")
            }
            Event::Ringing(r) if r.call.caller_display.as_deref() == Some(label) => {
                format!("ring {} of {} (park {:?})", r.id, r.ext, r.call.park)
            }
            Event::RingAnswered(r) if r.call.caller_display.as_deref() == Some(label) => {
                format!("ring {} answered", r.id)
            }
            Event::RingEnded { ringing: r } if r.call.caller_display.as_deref() == Some(label) => {
                format!("ring {} ended", r.id)
            }
            Event::PickedUp {
                ringing: r,
                by,
                parked,
            } if r.call.caller_display.as_deref() == Some(label) => {
                format!(
                    "ring {} picked up by {by} (park {:?})",
                    r.id,
                    parked.as_ref().map(|p| p.id)
                )
            }
            _ => continue,
        };
        out.push(format!("#{i} at {at}: {what}"));
    }
    out
}
