//! What the orbit state is told and what it answers: [`Command`]s in, [`Event`]s or a
//! [`Rejection`] out, and the bounds every number in a command is checked against (commands
//! come over the network).

use serde::{Deserialize, Serialize};

use crate::{
    CallInfo, EdgeLoad, EndReason, LotConfig, LotKey, Millis, ParkId, Parked, PickupGroup,
    RecallStage, RingCall, RingId, Ringing,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create or change a lot. Changing the slot range keeps parked calls that stay in range;
    /// a change that would leave a parked call outside the range is refused.
    SetLot(LotConfig),
    /// A lot from an edge's config: created if there is no lot of that park extension; one
    /// that exists (perhaps changed since through the admin API) is left as it is.
    SeedLot(LotConfig),
    /// Remove a lot; refused while a call is parked in it.
    DeleteLot(LotKey),
    /// An edge's config: the tenant's extensions, and its pickup groups unless an operator
    /// has changed them (`groups.rs`).
    SeedTenant {
        tenant: String,
        extensions: Vec<String>,
        groups: Vec<PickupGroup>,
    },
    /// Create or change a pickup group (an operator's); its members must be extensions of
    /// the tenant.
    SetPickupGroup(PickupGroup),
    /// Remove a pickup group (an operator's).
    DeletePickupGroup { tenant: String, name: String },
    /// Registry node `node` serves operators at `addr` (None: on its peer address).
    NodeAdmin { node: u64, addr: Option<String> },
    /// Park a call: in `slot`, or in a slot the lot's choice picks.
    Park {
        lot: LotKey,
        slot: Option<u32>,
        call: CallInfo,
    },
    /// Take the call out of `slot` (retrieve, or the recall being answered). With `park` set the
    /// claim is for that park only (a recall claims its own call, not a newer one in the slot).
    Claim {
        tenant: String,
        slot: u32,
        park: Option<ParkId>,
        by: String,
    },
    /// The deadline of `park` has come: start the recall.
    Expire { park: ParkId },
    /// The recall moved on (to the fallback).
    RecallStage { park: ParkId, stage: RecallStage },
    /// Ring extension `to` with the parked call now (an operator's): as a recall would, the
    /// slot claimable meanwhile; unanswered, the recall goes on to the parker.
    Send { park: ParkId, to: String },
    /// The call left the lot unclaimed.
    End { park: ParkId, reason: EndReason },
    /// Hand a waiting park over to edge `to` (its holder drains): the call keeps its slot and
    /// its deadline, and from now on `to` holds it (claims go there, its recall starts there).
    /// Refused once the park is claimed, ended or recalling, and unless `to` holds a lease and
    /// is not draining itself: ordered against a retrieve, so that exactly one of them wins.
    Move { park: ParkId, to: String },
    /// Push a waiting park's deadline `by_ms` later (an operator's): refused once its recall
    /// has begun, and beyond a day from now.
    Extend { park: ParkId, by_ms: u64 },
    /// Grant or renew an edge's lease until `now + ttl_ms`. `incarnation` names the edge's
    /// process (0: not said). While one incarnation's lease lives, another is refused
    /// ([`Rejection::IdentityInUse`]: two processes configured with one identity would take
    /// each other's calls) unless it `replaces` that one (a restarted process that kept its
    /// predecessor's incarnation on disk). A new incarnation that is let in means the edge
    /// restarted: the calls its previous process held (their media died with it) are lost at
    /// once. An edge whose lease lapses loses its parked calls (it may be gone, and nobody
    /// else holds their media). `sip` is where the edge takes trunk requests: how the other
    /// edges reach it, so that edges can come and go without anyone's config changing.
    Lease {
        edge: String,
        ttl_ms: u64,
        #[serde(default)]
        incarnation: u64,
        #[serde(default)]
        replaces: u64,
        #[serde(default)]
        sip: Option<std::net::SocketAddr>,
        /// What the edge holds now (shown to operators).
        #[serde(default)]
        load: EdgeLoad,
    },
    /// The lease of `edge` has run out: its parked calls are lost, their slots free. Refused
    /// before the lease's end (a renewal that came first wins).
    LeaseLapse { edge: String },
    /// `edge` is to drain (an operator's, or its own on SIGTERM): it takes no new calls, and
    /// no other edge hands it any. Until its lease ends.
    Drain { edge: String },
    /// `edge`'s process `incarnation` is leaving (a graceful stop, once drained): its lease
    /// ends now, and whatever it still held is lost with it, as if the lease had lapsed.
    Release { edge: String, incarnation: u64 },
    /// Extension `ext` of `tenant` has a phone registered at `edge` until `until` (so that other
    /// sites know where to ring it: recall, calls between sites).
    Locate {
        tenant: String,
        ext: String,
        edge: String,
        until: Millis,
    },
    /// No phone of `ext` is registered at `edge` any more.
    Unlocate {
        tenant: String,
        ext: String,
        edge: String,
    },
    /// Extension `ext` of `tenant` rings with `call`, which someone may pick up.
    Ring {
        tenant: String,
        ext: String,
        call: RingCall,
    },
    /// Ring `ring`'s callee answered: its record stays, as the call in progress (which nobody
    /// can pick up), until its `RingEnd`. Refused if the ring was picked up first.
    RingAnswered { ring: RingId },
    /// Ring `ring`'s call is over: cancelled, refused, timed out, or ended after its answer.
    RingEnd { ring: RingId },
    /// `by` takes a ringing call: ring `ring` if it rings one of `exts`, or without one named,
    /// the longest ringing of `exts` (the picker's pickup groups, or the one extension of a
    /// directed pickup).
    Pickup {
        tenant: String,
        exts: Vec<String>,
        ring: Option<RingId>,
        by: String,
    },
    /// `edge` has a lamp of extension `ext` of `tenant` until `until`: calls to and from `ext`
    /// are recorded from their first ring, wherever they ring.
    Watch {
        tenant: String,
        ext: String,
        edge: String,
        until: Millis,
    },
    /// `edge` has no lamp of `ext` any more.
    Unwatch {
        tenant: String,
        ext: String,
        edge: String,
    },
}

impl Command {
    /// The command's name, for logs, spans and refusals (never its contents).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::SetLot(_) => "set_lot",
            Command::SeedLot(_) => "seed_lot",
            Command::DeleteLot(_) => "delete_lot",
            Command::SeedTenant { .. } => "seed_tenant",
            Command::SetPickupGroup(_) => "set_pickup_group",
            Command::DeletePickupGroup { .. } => "delete_pickup_group",
            Command::NodeAdmin { .. } => "node_admin",
            Command::Park { .. } => "park",
            Command::Claim { .. } => "claim",
            Command::Expire { .. } => "expire",
            Command::RecallStage { .. } => "recall_stage",
            Command::Send { .. } => "send",
            Command::End { .. } => "end",
            Command::Extend { .. } => "extend",
            Command::Move { .. } => "move",
            Command::Lease { .. } => "lease",
            Command::LeaseLapse { .. } => "lease_lapse",
            Command::Drain { .. } => "drain",
            Command::Release { .. } => "release",
            Command::Locate { .. } => "locate",
            Command::Unlocate { .. } => "unlocate",
            Command::Watch { .. } => "watch",
            Command::Unwatch { .. } => "unwatch",
            Command::Ring { .. } => "ring",
            Command::RingAnswered { .. } => "ring_answered",
            Command::RingEnd { .. } => "ring_end",
            Command::Pickup { .. } => "pickup",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    LotSet(LotKey),
    LotDeleted(LotKey),
    /// The tenant's pickup groups (or its extensions) are as the state now says.
    PickupGroupsSet {
        tenant: String,
    },
    /// Where registry node `node` serves operators changed.
    NodeAdminSet {
        node: u64,
    },
    Parked(Parked),
    Claimed {
        parked: Parked,
        by: String,
    },
    Expired(Parked),
    RecallStage(Parked),
    /// An operator sent the parked call to `parked.sent_to`.
    Sent(Parked),
    /// A waiting park's deadline moved later.
    Extended(Parked),
    /// A waiting park is held by another edge now (`parked.call.edge`), handed over by `from`.
    Moved {
        parked: Parked,
        from: String,
    },
    Ended {
        parked: Parked,
        reason: EndReason,
    },
    LeaseGranted {
        edge: String,
        until: Millis,
    },
    Located {
        tenant: String,
        ext: String,
        edge: String,
        until: Millis,
    },
    Unlocated {
        tenant: String,
        ext: String,
        edge: String,
    },
    /// The edge came back as a new process (its lease now runs until `until`); the calls its
    /// previous process held (parked, and ringing) were lost with it.
    EdgeRestarted {
        edge: String,
        until: Millis,
        lost: Vec<Parked>,
        #[serde(default)]
        rings: Vec<Ringing>,
    },
    /// The edge's lease lapsed, or it left (`released`: a graceful stop); these calls (parked,
    /// and ringing) were lost with it.
    LeaseLapsed {
        edge: String,
        lost: Vec<Parked>,
        #[serde(default)]
        rings: Vec<Ringing>,
        #[serde(default)]
        released: bool,
    },
    /// The edge is draining.
    Draining {
        edge: String,
    },
    Ringing(Ringing),
    RingAnswered(Ringing),
    RingEnded {
        ringing: Ringing,
    },
    PickedUp {
        ringing: Ringing,
        by: String,
        /// A recall picked up: the park it took out of its slot (boxed: events are moved
        /// often, and this one is rare).
        #[serde(default)]
        parked: Option<Box<Parked>>,
    },
    Watched {
        tenant: String,
        ext: String,
        edge: String,
        until: Millis,
    },
    Unwatched {
        tenant: String,
        ext: String,
        edge: String,
    },
}

impl Event {
    /// The slots whose lamps this event changes.
    pub fn slots(&self) -> Vec<(&LotKey, u32)> {
        match self {
            Event::LotSet(_)
            | Event::LotDeleted(_)
            | Event::PickupGroupsSet { .. }
            | Event::NodeAdminSet { .. }
            | Event::LeaseGranted { .. }
            | Event::Draining { .. }
            | Event::Located { .. }
            | Event::Unlocated { .. }
            | Event::Watched { .. }
            | Event::Unwatched { .. }
            | Event::Ringing(_)
            | Event::RingAnswered(_)
            | Event::RingEnded { .. }
            | Event::PickedUp { parked: None, .. } => vec![],
            Event::PickedUp {
                parked: Some(p), ..
            } => vec![(&p.lot, p.slot)],
            Event::Parked(p)
            | Event::Expired(p)
            | Event::RecallStage(p)
            | Event::Sent(p)
            | Event::Extended(p) => vec![(&p.lot, p.slot)],
            Event::Claimed { parked, .. }
            | Event::Ended { parked, .. }
            | Event::Moved { parked, .. } => {
                vec![(&parked.lot, parked.slot)]
            }
            Event::LeaseLapsed { lost, .. } | Event::EdgeRestarted { lost, .. } => {
                lost.iter().map(|p| (&p.lot, p.slot)).collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("no such parking lot")]
    NoSuchLot,
    #[error("{0} calls are parked in the lot")]
    LotInUse(usize),
    #[error("lot configuration invalid: {0}")]
    BadLot(String),
    #[error("pickup group invalid: {0}")]
    BadGroup(String),
    #[error("no pickup group {0}")]
    NoSuchGroup(String),
    #[error("no extension {0}")]
    NoSuchExtension(String),
    #[error("only an operator's Send sends a parked call to an extension")]
    SendNotAStage,
    #[error("parking lot full")]
    LotFull,
    #[error("slot {0} is taken")]
    SlotTaken(u32),
    #[error("{0} is not a parking slot")]
    NotASlot(u32),
    #[error("slot {0} is empty")]
    Empty(u32),
    #[error("park {0} is no longer parked")]
    Gone(ParkId),
    #[error("park {park} is not due before {deadline}")]
    NotDue { park: ParkId, deadline: Millis },
    #[error("park {0} is not being recalled")]
    NotRecalling(ParkId),
    #[error("park {0} is being recalled already")]
    Recalling(ParkId),
    #[error("edge {0} holds no lease")]
    NoLease(String),
    #[error("the lease of edge {edge} runs until {until}")]
    LeaseLive { edge: String, until: Millis },
    /// An edge gave an address nobody can reach it at (unspecified, multicast, port 0).
    #[error("{0} is not an address an edge can be reached at")]
    BadAddress(String),
    /// A request id seen already, with another command: a retry must be the same change.
    #[error("request id {0} was used for another change")]
    RequestIdReused(String),
    /// A park may not go to that edge (no lease, draining, or its holder already).
    #[error("park cannot move to {0}")]
    CannotMoveTo(String),
    /// Another process (incarnation) holds this edge identity's lease.
    #[error("edge {edge} is held by another live process (incarnation {holder}) until {until}")]
    IdentityInUse {
        edge: String,
        holder: u64,
        until: Millis,
    },
    #[error("nothing is ringing there")]
    NotRinging,
    /// The proposing edge may not propose this command (it acts for another edge, or only the
    /// registry may): checked as the command is applied.
    #[error("{edge} may not propose {kind}")]
    NotYours { edge: String, kind: String },
    /// A number in a command outside what it may be (commands come over the network).
    #[error("{what} {value} is out of range (at most {max})")]
    OutOfRange { what: String, value: u64, max: u64 },
}

/// The longest a call may be parked (a day: longer is a mistake, not a policy).
pub const MAX_PARKING_MS: Millis = 24 * 3600 * 1000;
/// The longest a recall may ring one target.
pub const MAX_RING_MS: Millis = 10 * 60 * 1000;
/// The longest lease an edge may take at once.
pub const MAX_LEASE_MS: Millis = 3600 * 1000;
/// The furthest ahead a registration may be reported to last.
pub const MAX_LOCATION_MS: Millis = 24 * 3600 * 1000;

/// `value` if it is at most `max`, else the rejection naming it.
pub(crate) fn at_most(what: &'static str, value: u64, max: u64) -> Result<u64, Rejection> {
    if value > max {
        return Err(Rejection::OutOfRange {
            what: what.into(),
            value,
            max,
        });
    }
    Ok(value)
}

/// `value` if it is within 1..=`max`, else the rejection naming it.
pub(crate) fn in_range(what: &'static str, value: u64, max: u64) -> Result<u64, Rejection> {
    if value == 0 || value > max {
        return Err(Rejection::OutOfRange {
            what: what.into(),
            value,
            max,
        });
    }
    Ok(value)
}
