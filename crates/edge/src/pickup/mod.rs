//! Call pickup: answering a colleague's ringing phone from one's own, at any site.
//!
//! The edge where a caller's INVITE arrives rings the callee (its phones, or another site's
//! edge) and holds the caller and the media; it records the ring in the orbit state when the
//! callee is one somebody may pick up (in a pickup group, or anyone when the tenant lets
//! directed pickup reach anyone), once the call has rung for [`RECORD_AFTER`]. A picker's edge
//! asks the log for a ringing call (`Pickup`): the log orders it against the callee's answer
//! (`RingAnswered`) and against other pickers, so exactly one has the call. The winner takes it here
//! or, held at another site, over the trunk as retrieve does.
//!
//! ```text
//! caller ─INVITE 2001─▶ edge A ─▶ rings 2001 ── 0.5 s ──▶ Ring (log) ─▶ lamps, pickers
//! picker ─INVITE *8───▶ edge C ─▶ Pickup (log) ─▶ PickedUp(ring at A) ─▶ trunk INVITE,
//!     X-Orbit-Claim: ring-N ─▶ edge A: CANCEL 2001's phones (Reason: cause=200), 200 both ways
//! callee answers ─▶ 2xx held ─▶ RingAnswered ─▶ committed: relayed; refused: waits for the
//!     picker, then ACK+BYE (or relayed after all if no picker comes)
//! ```
//!
//! Pickup is a layer ([`Picking`]) over park's: one file per job (`ring.rs` records and ends
//! rings, `pick.rs` is the picker's side, `handover.rs` gives a ringing call here to its
//! picker, local or over the trunk, `recall.rs` records recalls' rings and gives a picked-up
//! recall to its picker, `shown.rs` records calls for extension lamps only: those a watched
//! extension makes, and those to one nobody may pick up).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use orbit_sip::build::Response;
use orbit_sip::header::Replaces;
use orbit_sip::key::ServerKey;
use orbit_sip::message::Message;
use orbit_sip::transport::Flow;
use orbit_state::{Command, Event, RingCall, RingId};
use tracing::{debug, info, info_span, warn};

use crate::call::{self, HeldAnswer, NewCall, NotPickable, Picker};
use crate::config::PickupDial;
use crate::park::Parking;
use crate::services::orbit_port::{Feature, OrbitError, Outcome, Then};
use crate::services::TimerKey;

mod handover;
mod pick;
mod recall;
mod ring;
mod shown;

pub(crate) use handover::*;
pub(crate) use pick::*;
pub(crate) use recall::*;
pub(crate) use ring::*;
pub(crate) use shown::*;

/// How long a call rings before it is recorded for pickup. Nobody picks up a call in its first
/// half second (a ring cadence is a second or two, and a person must hear it and dial), and
/// calls answered sooner cost the log nothing, unless a lamp watches the callee (then it is
/// recorded at once, so the lamp shows it).
pub(crate) const RECORD_AFTER: Duration = Duration::from_millis(500);

/// The pickup layer: pickup's own tables over park's layer (to which it derefs).
pub struct Picking {
    pub(crate) parking: Parking,
    pub(crate) pickup: Pickups,
    /// How each of pickup's proposals in flight continues, by its token.
    pub(crate) then: HashMap<u64, PickThen>,
}

impl std::ops::Deref for Picking {
    type Target = Parking;
    fn deref(&self) -> &Parking {
        &self.parking
    }
}

impl std::ops::DerefMut for Picking {
    fn deref_mut(&mut self) -> &mut Parking {
        &mut self.parking
    }
}

/// What pickup keeps, in tables of its own.
#[derive(Default)]
pub(crate) struct Pickups {
    /// Calls ringing here that are (or are about to be) recorded, and how far.
    pub rings: HashMap<u64, Ring>,
    /// Ring → the call ringing here.
    pub by_ring: HashMap<RingId, u64>,
    /// Pickers whose pickup the log is ordering, by their INVITE (true: cancelled meanwhile).
    pub picking: HashMap<ServerKey, bool>,
    /// Rings here picked up at another site (as the watch showed), by whom, until fetched.
    pub claimed: HashMap<RingId, String>,
    /// Trunk pickups waiting for the replica to show their pickup.
    pub waiting: HashMap<RingId, TrunkPick>,
    /// Calls whose recall rings the parker, and their ring (none while it is being recorded).
    pub recalls: HashMap<u64, Option<RingId>>,
    /// A recall's ring → its call.
    pub by_recall: HashMap<RingId, u64>,
    /// Calls recorded for lamps only (`shown.rs`): for the extension calling, the one called,
    /// or both.
    pub shown: HashMap<u64, Vec<Shown>>,
}

/// How one of pickup's proposals continues once its outcome is known.
pub(crate) enum PickThen {
    /// A ring recorded for call `.0`.
    Ring(u64),
    /// The callee of call `.0` answered (ring `.1`): its answer goes on if the log took it
    /// first.
    Answered(u64, RingId),
    /// A picker asked for a call (boxed: its INVITE is large beside a call's number).
    Pick(Box<Pick>),
    /// The ring of call `.0`'s recall recorded.
    RecallRing(u64),
    /// Call `.0` recorded for the lamp of extension `.1`.
    Shown(u64, String),
}

impl Picking {
    pub(crate) fn new(parking: Parking) -> Picking {
        Picking {
            parking,
            pickup: Pickups::default(),
            then: HashMap::new(),
        }
    }

    /// Have `cmd` ordered and continue with `then` once its outcome is known.
    pub(crate) fn propose_then(&mut self, now: Instant, cmd: Command, then: PickThen) {
        let token = self.propose(now, cmd, Then::Feature(Feature::Pickup));
        self.then.insert(token, then);
    }

    /// The outcome of pickup's proposal `token`.
    pub(crate) fn continue_with(&mut self, now: Instant, token: u64, outcome: Outcome) {
        match self.then.remove(&token) {
            Some(PickThen::Ring(id)) => ring_outcome(self, now, id, outcome),
            Some(PickThen::Answered(id, ring)) => answer_outcome(self, now, id, ring, outcome),
            Some(PickThen::Pick(p)) => pick_outcome(self, now, *p, outcome),
            Some(PickThen::RecallRing(id)) => recall_ring_outcome(self, now, id, outcome),
            Some(PickThen::Shown(id, ext)) => shown_outcome(self, now, id, &ext, outcome),
            None => {}
        }
    }

    /// Park's, then pickup's, bookkeeping of what the calls reported: answers held back and
    /// rings over. Whether there was any.
    pub(crate) fn after_calls(&mut self, now: Instant) -> bool {
        let parked = self.parking.after_calls(now);
        let recalls = on_recall_news(self, now);
        if self.unrung.is_empty() && self.held_answers.is_empty() && self.answered.is_empty() {
            return parked || recalls;
        }
        for h in std::mem::take(&mut self.held_answers) {
            on_held_answer(self, now, h);
        }
        for id in std::mem::take(&mut self.answered) {
            shown_answered(self, now, id);
        }
        for id in std::mem::take(&mut self.unrung) {
            on_unrung(self, now, id);
            shown_over(self, now, id);
        }
        true
    }

    /// An orbit event applied here: rings of ours recorded, picked up, or lost with our lease;
    /// calls of ours parked.
    pub(crate) fn on_orbit_event(&mut self, now: Instant, ev: &Event) {
        self.parking.on_orbit_event(now, ev);
        let site = self.id.clone();
        match ev {
            Event::Parked(p) if p.call.edge == site => on_parked(self, now, p),
            Event::Ringing(r) if r.call.edge == site => match r.call.park {
                Some(park) => on_recall_ring_shown(self, now, r, park),
                None => on_ring_shown(self, now, r),
            },
            Event::PickedUp {
                ringing,
                by,
                parked,
            } if ringing.call.edge == site => match parked {
                Some(p) => on_recall_picked(self, now, ringing, p, by),
                None => on_picked(self, now, ringing, by),
            },
            Event::Watched { ext, edge, .. } if *edge != site => {
                // At every renewal too (about twice per subscription period per lamp): debug.
                debug!(%ext, at = %edge, "lamp of {ext} watched at {edge}: its calls recorded from the first ring");
            }
            Event::LeaseLapsed { edge, rings, .. } | Event::EdgeRestarted { edge, rings, .. }
                if *edge == site =>
            {
                let ids: HashSet<RingId> = rings.iter().map(|r| r.id).collect();
                shown_lost(self, |r| ids.contains(&r));
                rings_lost(self, now, ids.into_iter().collect())
            }
            _ => {}
        }
    }

    /// The registry's whole state was replaced: rings of ours it no longer has, and whose
    /// pickup this edge has not seen, are gone some way this edge never heard of.
    pub(crate) fn resynced(&mut self, now: Instant) {
        self.parking.resynced(now);
        let gone: Vec<RingId> = self
            .pickup
            .by_ring
            .keys()
            .filter(|r| self.orbit.ringing(**r).is_none() && !self.pickup.claimed.contains_key(r))
            .copied()
            .collect();
        rings_lost(self, now, gone);
        let orbit = &self.parking.orbit;
        let gone: HashSet<RingId> = self
            .pickup
            .shown
            .values()
            .flatten()
            .filter_map(Shown::ring)
            .filter(|r| orbit.ringing(*r).is_none())
            .collect();
        shown_lost(self, |r| gone.contains(&r));
    }

    /// `who` at this site, as a pickup names its picker (and the holding edge checks it).
    pub(crate) fn picker_name(&self, who: &str) -> String {
        format!("{}/{who}", self.id)
    }
}
