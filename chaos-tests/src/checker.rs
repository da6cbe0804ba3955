//! The checker: what the phones saw, held against what a parking lot promises. It takes no
//! time stamp from Orbit: a park starts, at the earliest, when the parker's phone sent its
//! REFER, and is made, at the latest, when that phone got the NOTIFY saying 200; a call is
//! delivered when a phone got it (a retriever's 200, a parker's phone rung with the recall).
//! Which park a delivery is of, the phone tells by whom it was given (the parked party's name,
//! which the workload makes different for every park within a long window): a call put back
//! into another slot is still the same call.
//!
//! What it holds the run to, per slot and per park:
//! - a slot never holds two calls: a park into a slot succeeds only once the call before is
//!   gone from it;
//! - a parked call is delivered to one phone only: one retrieve won, or one recall;
//! - a recall never comes before its deadline (the REFER's time plus the lot's time), and
//!   never later than the deadline (from the NOTIFY) plus the allowance the faults give;
//! - no park is lost: every park the parker was told succeeded is delivered by the end.

use std::collections::BTreeMap;
use std::fmt;

use crate::sipp_log::Micros;

/// A park into an explicit slot, as the parker's phone saw it.
#[derive(Debug, Clone)]
pub struct Park {
    /// The parker's call (its Call-ID): names the park in the report.
    pub call: String,
    pub slot: u32,
    /// The parked party, as phones are shown it (its extension).
    pub parked: String,
    /// The site whose edge holds the call.
    pub held_at: String,
    /// The REFER left the phone: the park cannot be older.
    pub refer_sent: Micros,
    /// What the parker's phone was told.
    pub told: Told,
    /// The lot's parking time.
    pub timeout_us: Micros,
}

/// What a parker's phone was told of its park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// The NOTIFY saying `SIP/2.0 200` arrived then: the park is made.
    Made(Micros),
    /// A NOTIFY with a final failure (the slot taken, the registry out of reach).
    Refused,
    /// No final NOTIFY came: the park may or may not have been made.
    Unknown,
}

impl Park {
    /// When it was made, if the phone was told so.
    pub fn made(&self) -> Option<Micros> {
        match self.told {
            Told::Made(at) => Some(at),
            _ => None,
        }
    }
}

/// How a parked call reached a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// A retriever dialled the slot and got 200.
    Retrieved,
    /// The parker's phone was rung with "Recall <slot>".
    Recalled,
}

/// A parked call reaching a phone.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The slot the phone dialled, or was recalled from.
    pub slot: u32,
    /// Whom the phone was told it got (the parked party's name), if it was told.
    pub parked: Option<String>,
    pub how: How,
    /// When the phone asked for it (a retriever's INVITE sent); a recall was asked by nobody.
    pub asked: Option<Micros>,
    /// When the phone had it: the 200 for a retrieve, the INVITE for a recall.
    pub at: Micros,
    /// The phone (its name in the run).
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A park into `slot` was made while the call parked there before was certainly still in
    /// it (no phone had asked for or been rung with it yet).
    SlotHeldTwo {
        slot: u32,
        held: String,
        second: String,
    },
    /// The call of park `call` reached more than one phone.
    DeliveredTwice { call: String, phones: Vec<String> },
    /// Recalled `early_ms` before its deadline by the phones' clock.
    RecallEarly { call: String, early_ms: i64 },
    /// Recalled `late_ms` after its deadline, beyond the allowance.
    RecallLate { call: String, late_ms: i64 },
    /// Made, and never delivered although its recall was due long before the end.
    Lost { call: String, slot: u32 },
    /// A phone got a call that no park had been made or asked for (by the name it was given,
    /// else by its slot).
    FromNowhere {
        slot: u32,
        phone: String,
        at: Micros,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::SlotHeldTwo { slot, held, second } => {
                write!(f, "slot {slot} held two calls: {held} and {second}")
            }
            Violation::DeliveredTwice { call, phones } => {
                write!(f, "park {call} delivered to {}", phones.join(" and "))
            }
            Violation::RecallEarly { call, early_ms } => {
                write!(f, "park {call} recalled {early_ms} ms before its deadline")
            }
            Violation::RecallLate { call, late_ms } => {
                write!(f, "park {call} recalled {late_ms} ms after its deadline")
            }
            Violation::Lost { call, slot } => write!(f, "park {call} in slot {slot} lost"),
            Violation::FromNowhere { slot, phone, at } => {
                write!(
                    f,
                    "{phone} got a call from slot {slot} at {at} with no park made"
                )
            }
        }
    }
}

/// What the run held to, and how late the recalls came.
#[derive(Debug, Default)]
pub struct Report {
    pub parks_made: usize,
    pub parks_refused: usize,
    /// Parks whose outcome the parker's phone never heard.
    pub parks_unknown: usize,
    /// Parks made and never delivered, whose edge was killed while it held them.
    pub lost_with_edge: usize,
    pub retrieved: usize,
    pub recalled: usize,
    /// Each recall's lateness after its deadline (from the NOTIFY), in ms.
    pub recall_late_ms: Vec<i64>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// `p`-th percentile of the recalls' lateness (0 to 100), if any recall came.
    pub fn late_percentile(&self, p: f64) -> Option<i64> {
        let mut v = self.recall_late_ms.clone();
        v.sort_unstable();
        let last = v.len().checked_sub(1)?;
        Some(v[((last as f64) * p / 100.0).round() as usize])
    }
}

/// Hold `parks` and `deliveries` to the promises above. `edge_kills`: sites whose edge was
/// killed, and when (a park made there before, never delivered, was lost with it);
/// `allowance_us`: how late a recall may be (an election and the faults' own delays); `end`:
/// when the phones stopped looking (a park whose recall was due, allowance included, before
/// it must have been delivered).
pub fn check(
    parks: &[Park],
    deliveries: &[Delivery],
    edge_kills: &[(String, Micros)],
    allowance_us: Micros,
    end: Micros,
) -> Report {
    let mut r = Report::default();
    // Made parks per slot, in the order they were made; parks that may have been made (made,
    // or not heard of) by the parked party's name, in the order they were asked for.
    let mut by_slot: BTreeMap<u32, Vec<&Park>> = BTreeMap::new();
    let mut by_name: BTreeMap<&str, Vec<&Park>> = BTreeMap::new();
    for p in parks {
        match p.told {
            Told::Made(_) => {
                r.parks_made += 1;
                by_slot.entry(p.slot).or_default().push(p);
            }
            Told::Refused => r.parks_refused += 1,
            Told::Unknown => r.parks_unknown += 1,
        }
        if p.told != Told::Refused {
            by_name.entry(p.parked.as_str()).or_default().push(p);
        }
    }
    for v in by_slot.values_mut() {
        v.sort_by_key(|p| p.made());
    }
    for v in by_name.values_mut() {
        v.sort_by_key(|p| p.refer_sent);
    }
    // Each delivery goes to the last park of the party it named that was made before the
    // phone had the call; else (a retriever quicker than the parker's NOTIFY, or a park not
    // heard of) the last asked for before. A delivery that named nobody goes by its slot.
    let mut got: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in deliveries {
        match d.how {
            How::Retrieved => r.retrieved += 1,
            How::Recalled => r.recalled += 1,
        }
        let candidates = match &d.parked {
            Some(name) => by_name.get(name.as_str()),
            None => by_slot.get(&d.slot),
        };
        let park = candidates.and_then(|ps| {
            let made_before = ps
                .iter()
                .rev()
                .find(|p| p.made().is_some_and(|m| m <= d.at));
            made_before.or_else(|| ps.iter().rev().find(|p| p.refer_sent <= d.at))
        });
        match park {
            Some(p) => got.entry(p.call.as_str()).or_default().push(d),
            None => r.violations.push(Violation::FromNowhere {
                slot: d.slot,
                phone: d.phone.clone(),
                at: d.at,
            }),
        }
    }
    // When the edge holding `p` was killed after `p` was made and before its recall was due
    // (allowance included), if it was.
    let killed = |p: &Park| {
        let made = p.made()?;
        let due = made + p.timeout_us + allowance_us;
        edge_kills
            .iter()
            .filter(|(site, at)| *site == p.held_at && (made..=due).contains(at))
            .map(|(_, at)| *at)
            .min()
    };
    // The earliest moment the call of `p` can have left its slot: a phone asking for it, its
    // deadline (the REFER's time plus the lot's time at the earliest) for a recall, or its
    // edge killed.
    let left = |p: &Park| {
        let delivered = got.get(p.call.as_str()).and_then(|ds| {
            ds.iter()
                .map(|d| match d.asked {
                    Some(asked) => asked,
                    None => d.at.min(p.refer_sent + p.timeout_us),
                })
                .min()
        });
        delivered.into_iter().chain(killed(p)).min()
    };
    for ps in by_slot.values() {
        for pair in ps.windows(2) {
            let (held, next) = (pair[0], pair[1]);
            let next_made = next.made().expect("only made parks are kept");
            if left(held).is_none_or(|l| next_made < l) {
                r.violations.push(Violation::SlotHeldTwo {
                    slot: held.slot,
                    held: held.call.clone(),
                    second: next.call.clone(),
                });
            }
        }
    }
    for ps in by_name.values() {
        for p in ps {
            let ds = got.get(p.call.as_str()).cloned().unwrap_or_default();
            if ds.len() > 1 {
                r.violations.push(Violation::DeliveredTwice {
                    call: p.call.clone(),
                    phones: ds.iter().map(|d| d.phone.clone()).collect(),
                });
            }
            for d in ds.iter().filter(|d| d.how == How::Recalled) {
                let earliest = p.refer_sent + p.timeout_us;
                if d.at < earliest {
                    r.violations.push(Violation::RecallEarly {
                        call: p.call.clone(),
                        early_ms: (earliest - d.at) / 1000,
                    });
                }
                // How late, only where the phone knows when the park was made.
                let Some(made) = p.made() else { continue };
                let late = (d.at - (made + p.timeout_us)) / 1000;
                r.recall_late_ms.push(late);
                if late * 1000 > allowance_us {
                    r.violations.push(Violation::RecallLate {
                        call: p.call.clone(),
                        late_ms: late,
                    });
                }
            }
            let due = p.made().map(|m| m + p.timeout_us + allowance_us);
            if ds.is_empty() && killed(p).is_some() {
                r.lost_with_edge += 1;
            } else if ds.is_empty() && due.is_some_and(|due| due < end) {
                r.violations.push(Violation::Lost {
                    call: p.call.clone(),
                    slot: p.slot,
                });
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    /// A park of party `<call>-party`, made at `made` (`None`: refused).
    fn park(call: &str, slot: u32, sent: Micros, made: Option<Micros>) -> Park {
        Park {
            call: call.into(),
            slot,
            parked: format!("{call}-party"),
            held_at: "site-a".into(),
            refer_sent: sent,
            told: made.map_or(Told::Refused, Told::Made),
            timeout_us: 10 * S,
        }
    }

    /// A delivery naming the party of park `call`.
    fn of(mut d: Delivery, call: &str) -> Delivery {
        d.parked = Some(format!("{call}-party"));
        d
    }

    /// A recall from `slot` at `at`, naming nobody (taken by its slot).
    fn recall(slot: u32, at: Micros) -> Delivery {
        Delivery {
            slot,
            parked: None,
            how: How::Recalled,
            asked: None,
            at,
            phone: "parker".into(),
        }
    }

    fn retrieve(slot: u32, asked: Micros, at: Micros, phone: &str) -> Delivery {
        Delivery {
            slot,
            parked: None,
            how: How::Retrieved,
            asked: Some(asked),
            at,
            phone: phone.into(),
        }
    }

    #[test]
    fn a_clean_run_has_nothing_to_say_but_its_figures() {
        let parks = [
            park("p1", 701, 0, Some(S / 10)),
            park("p2", 702, S, Some(S + S / 10)),
            // Into 701 once p1 is back with its parker.
            park("p3", 701, 11 * S, Some(11 * S + S / 10)),
            park("p4", 703, 0, None),
        ];
        let ds = [
            recall(701, 10 * S + S / 2),
            retrieve(702, 3 * S, 3 * S + S / 5, "carol"),
            retrieve(701, 12 * S, 12 * S + S / 5, "dave"),
        ];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.parks_made, r.parks_refused), (3, 1));
        assert_eq!((r.retrieved, r.recalled), (2, 1));
        assert_eq!(r.recall_late_ms, vec![400]);
        assert_eq!(r.late_percentile(99.0), Some(400));
    }

    #[test]
    fn a_recall_before_the_deadline_by_the_phones_clock_is_early() {
        let parks = [park("p1", 701, 0, Some(S / 10))];
        // 10 s after the REFER left is the earliest; 9.9 s is early, even though the
        // system's own clock might have said otherwise.
        let r = check(&parks, &[recall(701, 10 * S - S / 10)], &[], 2 * S, 40 * S);
        assert_eq!(
            r.violations,
            vec![Violation::RecallEarly {
                call: "p1".into(),
                early_ms: 100
            }]
        );
    }

    #[test]
    fn a_recall_beyond_the_allowance_is_late_and_within_it_is_counted() {
        let parks = [park("p1", 701, 0, Some(S))];
        let r = check(&parks, &[recall(701, 13 * S + S / 2)], &[], 2 * S, 40 * S);
        assert_eq!(
            r.violations,
            vec![Violation::RecallLate {
                call: "p1".into(),
                late_ms: 2_500
            }]
        );
        let r = check(&parks, &[recall(701, 12 * S)], &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty());
        assert_eq!(r.recall_late_ms, vec![1_000]);
    }

    #[test]
    fn one_call_reaching_two_phones_is_caught() {
        let parks = [park("p1", 701, 0, Some(S / 10))];
        // Two racing retrievers both given the call; then the recall too.
        let ds = [
            retrieve(701, 2 * S, 2 * S + 1, "carol"),
            retrieve(701, 2 * S, 2 * S + 2, "dave"),
            recall(701, 10 * S + S / 2),
        ];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert_eq!(
            r.violations,
            vec![Violation::DeliveredTwice {
                call: "p1".into(),
                phones: vec!["carol".into(), "dave".into(), "parker".into()]
            }]
        );
    }

    #[test]
    fn a_second_park_into_a_held_slot_is_caught() {
        let parks = [
            park("p1", 701, 0, Some(S / 10)),
            // Made while p1 still sat there: nobody had asked for p1 yet.
            park("p2", 701, S, Some(S + S / 10)),
        ];
        let ds = [retrieve(701, 5 * S, 5 * S + S / 5, "carol")];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(
            r.violations.contains(&Violation::SlotHeldTwo {
                slot: 701,
                held: "p1".into(),
                second: "p2".into()
            }),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn parks_made_out_of_the_order_they_were_asked_in_are_told_apart() {
        // p3 is retrieved; p5 is parked at once; p4, asked for earlier but held up by a cut,
        // is made only after a retriever, held up too, took p5.
        let parks = [
            park("p3", 704, 0, Some(S / 10)),
            park("p4", 704, 3 * S, Some(4 * S + 600_000)),
            park("p5", 704, 4 * S, Some(4 * S + 400_000)),
        ];
        let ds = [
            retrieve(704, 3 * S + 500_000, 3 * S + 600_000, "carol"),
            retrieve(704, 3 * S + 500_000, 4 * S + 500_000, "dave"),
            retrieve(704, 7 * S, 7 * S + 100_000, "erin"),
        ];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn a_made_park_never_delivered_is_lost_once_its_recall_was_long_due() {
        let parks = [park("p1", 701, 0, Some(S / 10))];
        let r = check(&parks, &[], &[], 2 * S, 40 * S);
        assert_eq!(
            r.violations,
            vec![Violation::Lost {
                call: "p1".into(),
                slot: 701
            }]
        );
        // Still within its time when the phones stopped looking: not lost.
        assert!(check(&parks, &[], &[], 2 * S, 11 * S).violations.is_empty());
    }

    #[test]
    fn a_call_out_of_a_slot_nobody_parked_in_is_caught() {
        let r = check(&[], &[retrieve(709, S, 2 * S, "carol")], &[], 2 * S, 40 * S);
        assert_eq!(r.violations.len(), 1);
        assert!(matches!(
            r.violations[0],
            Violation::FromNowhere { slot: 709, .. }
        ));
    }

    #[test]
    fn a_call_put_back_into_another_slot_is_still_its_park_by_the_name_the_phone_was_given() {
        // p1 parked in 701, claimed, put back into 705 and recalled from there: by slot that
        // is a call from nowhere and a lost park; by the name, p1's recall.
        let parks = [park("p1", 701, 0, Some(S / 10))];
        let ds = [of(recall(705, 10 * S + S / 2), "p1")];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.recalled, 1);
        // A name no park had is from nowhere, whatever its slot.
        let ds = [of(recall(701, 10 * S + S / 2), "p9")];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r.violations.contains(&Violation::Lost {
            call: "p1".into(),
            slot: 701
        }));
        assert!(matches!(
            r.violations[0],
            Violation::FromNowhere { slot: 701, .. }
        ));
    }

    #[test]
    fn a_park_whose_outcome_never_came_may_be_delivered_and_is_never_lost() {
        let mut p = park("p1", 701, 0, None);
        p.told = Told::Unknown;
        let r = check(&[p.clone()], &[], &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.parks_made, r.parks_unknown), (0, 1));
        // Its recall is its own (not from nowhere), and still not early.
        let ds = [of(recall(701, 10 * S + S / 2), "p1")];
        let r = check(&[p.clone()], &ds, &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let ds = [of(recall(701, 9 * S), "p1")];
        let r = check(&[p], &ds, &[], 2 * S, 40 * S);
        assert_eq!(
            r.violations,
            vec![Violation::RecallEarly {
                call: "p1".into(),
                early_ms: 1_000
            }]
        );
    }

    #[test]
    fn a_slot_is_free_from_its_calls_deadline_not_from_when_the_recall_rang() {
        // p1's deadline is 10 s after its REFER; its recall rang the parker at 10.8 s. p2 was
        // made into the slot at 10.5 s: after the deadline freed it, so no slot held two.
        let parks = [
            park("p1", 701, 0, Some(S / 10)),
            park("p2", 701, 10 * S + S / 4, Some(10 * S + S / 2)),
        ];
        let ds = [
            of(recall(701, 10 * S + 8 * S / 10), "p1"),
            of(retrieve(701, 12 * S, 12 * S + S / 5, "dave"), "p2"),
        ];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        // Made before the deadline and before anyone asked for p1: two in one slot.
        let parks = [
            park("p1", 701, 0, Some(S / 10)),
            park("p2", 701, 9 * S, Some(9 * S + S / 2)),
        ];
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r
            .violations
            .iter()
            .any(|v| matches!(v, Violation::SlotHeldTwo { .. })));
    }

    #[test]
    fn parks_held_by_an_edge_when_it_was_killed_are_lost_with_it_and_no_others() {
        let mut at_b = park("p2", 702, 0, Some(S / 10));
        at_b.held_at = "site-b".into();
        let parks = [
            park("p1", 701, 0, Some(S / 10)),
            at_b,
            // Made at site A after its edge came back: held to its promise.
            park("p3", 703, 6 * S, Some(6 * S + S / 10)),
        ];
        let kills = [("site-a".to_string(), 5 * S)];
        let r = check(&parks, &[], &kills, 2 * S, 40 * S);
        assert_eq!(r.lost_with_edge, 1);
        // A kill long after p1's recall was due does not excuse it.
        let late_kill = [("site-a".to_string(), 30 * S)];
        let r2 = check(&parks[..1], &[], &late_kill, 2 * S, 40 * S);
        assert_eq!(r2.lost_with_edge, 0);
        assert_eq!(r2.violations.len(), 1);
        assert_eq!(
            r.violations,
            vec![
                Violation::Lost {
                    call: "p2".into(),
                    slot: 702
                },
                Violation::Lost {
                    call: "p3".into(),
                    slot: 703
                }
            ]
        );
    }

    #[test]
    fn a_slot_is_free_once_the_edge_holding_its_call_was_killed() {
        let parks = [
            park("p1", 701, 0, Some(S / 10)),
            park("p2", 701, 6 * S, Some(6 * S + S / 10)),
        ];
        let ds = [of(retrieve(701, 7 * S, 7 * S + S / 5, "dave"), "p2")];
        let kills = [("site-a".to_string(), 5 * S)];
        let r = check(&parks, &ds, &kills, 2 * S, 40 * S);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        // Without the kill, p1 sat in 701 when p2 was made.
        let r = check(&parks, &ds, &[], 2 * S, 40 * S);
        assert!(r
            .violations
            .iter()
            .any(|v| matches!(v, Violation::SlotHeldTwo { .. })));
    }
}
