//! The orbit state: parking lots, the calls parked in them, their claims and their deadlines;
//! the calls ringing extensions that someone may pick up (`rings.rs`); edges' leases;
//! tenants' extensions and pickup groups (`groups.rs`); where registry nodes serve operators
//! (`nodes.rs`). An operator may also send a parked call to an extension (`Send`: a recall
//! stage of its own, `Recalling(Sent)`, then the parker as below).
//!
//! A deterministic state machine: [`Orbit::apply`] takes a [`Command`] and the time the command
//! was decided at (milliseconds since the Unix epoch, stamped by whoever orders the commands:
//! the edge on one site, the Raft leader across sites) and returns the [`Event`] it caused, or
//! why it was refused. Nothing here reads a clock, does I/O or knows SIP; the same commands
//! applied in the same order give the same state on every replica.
//!
//! ```text
//!            Park ─▶ Waiting ──Expire (deadline reached)──▶ Recalling(Parker) ─RecallStage─▶ Recalling(Fallback)
//!                      │  │                                     │        │                     │
//!   Claim (retrieve) ◀─┘  └─ Cancel (hung up) ─▶ gone ◀─ Cancel ─┘        └──── Claim ──────────┘
//! ```
//!
//! A slot holds at most one call; a park is claimed at most once (whoever comes first, the
//! retriever or the recall, wins); Expire is fenced by the park id and refused before the
//! deadline, so a timeout fires once and never early.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

mod authority;
mod commands;
mod groups;
pub mod names;
mod nodes;
mod reads;
mod repr;
mod rings;
mod watches;
pub use authority::Proposer;
use commands::{at_most, in_range};
pub use commands::{
    Command, Event, Rejection, MAX_LEASE_MS, MAX_LOCATION_MS, MAX_PARKING_MS, MAX_RING_MS,
};
pub use groups::{
    is_extension, is_group_name, PickupGroup, MAX_EXTENSIONS, MAX_GROUPS, MAX_TENANTS,
};
pub use nodes::{is_host_port, MAX_NODES};
pub use rings::{RingCall, RingId, Ringing, MAX_PICKUP_EXTS, MAX_RINGS, MAX_RINGS_PER_EDGE};
pub use watches::{MAX_WATCHES, MAX_WATCHES_PER_EDGE, MAX_WATCH_MS};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;
/// Unique for the life of the state (never reused), so stale commands can be fenced.
pub type ParkId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SlotChoice {
    /// The lowest free slot.
    #[default]
    FirstFree,
    /// The first free slot after the one used last, wrapping (spreads reuse of slot numbers,
    /// so a stale "701" on someone's note is less likely to find another caller).
    NextAfterLast,
}

/// A parking lot as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotConfig {
    /// The tenant (SIP domain) the lot belongs to.
    pub tenant: String,
    /// The park extension, e.g. "700"; also the lot's name.
    pub park_ext: String,
    pub first_slot: u32,
    pub last_slot: u32,
    /// How long a call stays parked before it is recalled.
    pub parking_ms: u64,
    /// How long the recall rings the parker before the fallback.
    pub recall_ring_ms: u64,
    /// Extension the recall falls back to; none: the caller is hung up.
    pub fallback: Option<String>,
    pub choice: SlotChoice,
}

/// The lot a command is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LotKey {
    pub tenant: String,
    pub park_ext: String,
}

/// Who and what is parked, as the edge that holds the call describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// The parked party: its AOR and display name.
    pub caller_uri: String,
    pub caller_display: Option<String>,
    /// The extension that parked it (recall rings it).
    pub parker: String,
    /// The edge (site) holding the call and its media.
    pub edge: String,
    /// The parked dialog as the parked party sees it (for lamp keys, RFC 4235).
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// The parked party's audio codec (`PCMU`, `PCMA`): a retriever at any site must be able to
    /// take it, and is refused before claiming when its offer cannot.
    #[serde(default)]
    pub codec: Option<String>,
    /// The park's trace (W3C `traceparent`), when it was recorded: a retrieve, recall or
    /// pickup anywhere joins it. Nothing decides by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecallStage {
    /// Ringing the parker.
    Parker,
    /// Ringing the lot's fallback destination.
    Fallback,
    /// Ringing the extension an operator sent the call to (`Parked::sent_to`); unanswered, the
    /// recall goes on to the parker.
    Sent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Waiting,
    Recalling { stage: RecallStage, since: Millis },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub id: ParkId,
    pub lot: LotKey,
    pub slot: u32,
    pub call: CallInfo,
    pub parked_at: Millis,
    pub deadline: Millis,
    pub phase: Phase,
    /// The extension an operator sent the call to (`Command::Send`), while it rings there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_to: Option<String>,
}

/// What an edge holds, as its last lease renewal said (the admin API shows it; nothing
/// decides by it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeLoad {
    /// Calls up or ringing, parked ones included.
    pub calls: u32,
    /// Media relay ports open.
    pub relay_ports: u32,
}

/// Why a parked call left its slot without being claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// The parked caller hung up.
    HungUp,
    /// Recall and fallback went unanswered (or there was no fallback).
    Abandoned,
    /// The edge holding the call lost it (its media or the edge itself failed).
    Lost,
    /// The parked caller's phone sent no RTP or RTCP for longer than a park can last: it is
    /// gone without a BYE.
    NoMedia,
    /// An operator hung it up (admin API): the edge holding it sends the caller BYE.
    Operator,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Lot {
    cfg: Option<LotConfig>,
    slots: BTreeMap<u32, ParkId>,
    last_used: Option<u32>,
}

/// The whole orbit state. Serialised as lists (JSON maps need string keys); the deadline index
/// is rebuilt from the parked calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(into = "repr::OrbitRepr", from = "repr::OrbitRepr")]
pub struct Orbit {
    lots: BTreeMap<LotKey, Lot>,
    parks: BTreeMap<ParkId, Parked>,
    /// Waiting parks by deadline, for the timer that fires Expire.
    deadlines: BTreeMap<(Millis, ParkId), ()>,
    next_park: ParkId,
    /// Edge leases: edge → end of its lease.
    leases: BTreeMap<String, Millis>,
    /// Edge → the incarnation (process) that last renewed its lease.
    incarnations: BTreeMap<String, u64>,
    /// Edge → where it takes trunk requests (from its lease).
    trunks: BTreeMap<String, std::net::SocketAddr>,
    /// Edge → what it held at its last lease renewal.
    loads: BTreeMap<String, EdgeLoad>,
    /// Registry node → where it serves operators (`nodes.rs`).
    node_admins: BTreeMap<u64, String>,
    /// Edges draining (until their lease ends).
    draining: BTreeSet<String>,
    /// Where extensions are registered: (tenant, ext) → edge → registered until.
    locations: BTreeMap<(String, String), BTreeMap<String, Millis>>,
    /// Calls ringing extensions that may be picked up (`rings.rs`).
    rings: BTreeMap<RingId, Ringing>,
    /// How many of `rings` each edge holds (derived from them: not serialised).
    rings_by_edge: BTreeMap<String, usize>,
    /// (tenant, extension) → its rings (derived: a lamp or a pickup finds them without a scan).
    rings_by_ext: BTreeMap<(String, String), BTreeSet<RingId>>,
    next_ring: RingId,
    /// Which extensions' lamps are watched, from which edges (`watches.rs`).
    watches: watches::Watches,
    /// How many of `watches` each edge has (derived: not serialised).
    watches_by_edge: BTreeMap<String, usize>,
    /// Each tenant's extensions and pickup groups (`groups.rs`).
    tenants: groups::Tenants,
}

impl LotConfig {
    pub fn key(&self) -> LotKey {
        LotKey {
            tenant: self.tenant.clone(),
            park_ext: self.park_ext.clone(),
        }
    }

    pub fn contains(&self, slot: u32) -> bool {
        (self.first_slot..=self.last_slot).contains(&slot)
    }

    /// The checks a lot must pass on its own; [`Orbit::apply`] adds overlap with other lots.
    pub fn validate(&self) -> Result<(), String> {
        if self.first_slot > self.last_slot {
            return Err(format!(
                "lot {}: first slot {} is after last slot {}",
                self.park_ext, self.first_slot, self.last_slot
            ));
        }
        if self.last_slot - self.first_slot >= 1_000_000 {
            return Err(format!("lot {}: more than a million slots", self.park_ext));
        }
        if let Ok(ext) = self.park_ext.parse::<u32>() {
            if self.contains(ext) {
                return Err(format!(
                    "lot {}: the park extension lies inside its own slot range {}-{}",
                    self.park_ext, self.first_slot, self.last_slot
                ));
            }
        }
        if self.parking_ms == 0 || self.recall_ring_ms == 0 {
            return Err(format!(
                "lot {}: parking and recall ring times must be positive",
                self.park_ext
            ));
        }
        if self.parking_ms > MAX_PARKING_MS || self.recall_ring_ms > MAX_RING_MS {
            return Err(format!(
                "lot {}: parking time at most {} s, recall ring at most {} s",
                self.park_ext,
                MAX_PARKING_MS / 1000,
                MAX_RING_MS / 1000
            ));
        }
        Ok(())
    }
}

/// The slot a park without a slot number would take, skipping `skip`.
fn pick(cfg: &LotConfig, lot: &Lot, skip: impl Fn(u32) -> bool) -> Option<u32> {
    let start = match (cfg.choice, lot.last_used) {
        (SlotChoice::NextAfterLast, Some(l)) if l < cfg.last_slot => l + 1,
        _ => cfg.first_slot,
    };
    (start..=cfg.last_slot)
        .chain(cfg.first_slot..start)
        .find(|s| !lot.slots.contains_key(s) && !skip(*s))
}

impl Orbit {
    pub fn new() -> Orbit {
        Orbit::default()
    }

    /// Apply one command decided at `now`.
    pub fn apply(&mut self, now: Millis, cmd: &Command) -> Result<Event, Rejection> {
        match cmd {
            Command::SetLot(cfg) => self.set_lot(cfg),
            Command::SeedLot(cfg) => match self.lots.get(&cfg.key()).and_then(|l| l.cfg.as_ref()) {
                Some(_) => Ok(Event::LotSet(cfg.key())),
                None => self.set_lot(cfg),
            },
            Command::DeleteLot(key) => {
                let lot = self.lots.get(key).ok_or(Rejection::NoSuchLot)?;
                if !lot.slots.is_empty() {
                    return Err(Rejection::LotInUse(lot.slots.len()));
                }
                self.lots.remove(key);
                Ok(Event::LotDeleted(key.clone()))
            }
            Command::SeedTenant {
                tenant,
                extensions,
                groups,
            } => self.seed_tenant(tenant, extensions, groups),
            Command::SetPickupGroup(g) => self.set_group(g),
            Command::NodeAdmin { node, addr } => self.set_node_admin(*node, addr.as_deref()),
            Command::DeletePickupGroup { tenant, name } => self.delete_group(tenant, name),
            Command::Park { lot, slot, call } => self.park(now, lot, *slot, call),
            Command::Claim {
                tenant,
                slot,
                park,
                by,
            } => self.claim(tenant, *slot, *park, by),
            Command::Expire { park } => self.expire(now, *park),
            Command::Extend { park, by_ms } => self.extend(now, *park, *by_ms),
            Command::Move { park, to } => self.move_park(now, *park, to),
            Command::RecallStage { park, stage } => self.recall_stage(now, *park, *stage),
            Command::Send { park, to } => self.send(now, *park, to),
            Command::End { park, reason } => {
                let p = self.remove(*park)?;
                Ok(Event::Ended {
                    parked: p,
                    reason: *reason,
                })
            }
            Command::Lease {
                edge,
                ttl_ms,
                incarnation,
                replaces,
                sip,
                load,
            } => {
                let until = now.saturating_add(in_range("lease ttl_ms", *ttl_ms, MAX_LEASE_MS)?);
                if let (Some(&holder), Some(&held_until)) =
                    (self.incarnations.get(edge), self.leases.get(edge))
                {
                    let other = *incarnation != 0 && holder != 0 && holder != *incarnation;
                    if other && now < held_until && *replaces != holder {
                        return Err(Rejection::IdentityInUse {
                            edge: edge.clone(),
                            holder,
                            until: held_until,
                        });
                    }
                }
                if let Some(a) = sip.filter(|a| !names::is_trunk_addr(a)) {
                    return Err(Rejection::BadAddress(a.to_string()));
                }
                self.leases.insert(edge.clone(), until);
                self.loads.insert(edge.clone(), *load);
                match sip {
                    Some(a) => self.trunks.insert(edge.clone(), *a),
                    None => self.trunks.remove(edge),
                };
                let restarted = *incarnation != 0
                    && self
                        .incarnations
                        .insert(edge.clone(), *incarnation)
                        .is_some_and(|before| before != *incarnation);
                if restarted {
                    // A new process is not draining (its predecessor was).
                    self.draining.remove(edge);
                    let lost = self.drop_edge(edge)?;
                    return Ok(Event::EdgeRestarted {
                        edge: edge.clone(),
                        until,
                        lost,
                        rings: self.drop_rings(edge),
                    });
                }
                Ok(Event::LeaseGranted {
                    edge: edge.clone(),
                    until,
                })
            }
            Command::LeaseLapse { edge } => {
                let until = *self
                    .leases
                    .get(edge)
                    .ok_or_else(|| Rejection::NoLease(edge.clone()))?;
                if now < until {
                    return Err(Rejection::LeaseLive {
                        edge: edge.clone(),
                        until,
                    });
                }
                self.end_lease(edge, false)
            }
            Command::Drain { edge } => {
                if !self.leases.contains_key(edge) {
                    return Err(Rejection::NoLease(edge.clone()));
                }
                self.draining.insert(edge.clone());
                Ok(Event::Draining { edge: edge.clone() })
            }
            Command::Release { edge, incarnation } => {
                // Only the process that holds the lease leaves with it (not a twin refused
                // a lease of its own, nor a predecessor's late word).
                match self.incarnations.get(edge) {
                    Some(holder) if holder == incarnation => {}
                    Some(&holder) => {
                        return Err(Rejection::IdentityInUse {
                            edge: edge.clone(),
                            holder,
                            until: self.leases.get(edge).copied().unwrap_or(0),
                        })
                    }
                    None => return Err(Rejection::NoLease(edge.clone())),
                }
                self.end_lease(edge, true)
            }
            Command::Locate {
                tenant,
                ext,
                edge,
                until,
            } => {
                at_most(
                    "registration ahead ms",
                    until.saturating_sub(now),
                    MAX_LOCATION_MS,
                )?;
                // Expired entries go when anything about the extension changes.
                let m = self
                    .locations
                    .entry((tenant.clone(), ext.clone()))
                    .or_default();
                m.retain(|_, u| *u > now);
                m.insert(edge.clone(), *until);
                Ok(Event::Located {
                    tenant: tenant.clone(),
                    ext: ext.clone(),
                    edge: edge.clone(),
                    until: *until,
                })
            }
            Command::Unlocate { tenant, ext, edge } => {
                let key = (tenant.clone(), ext.clone());
                if let Some(m) = self.locations.get_mut(&key) {
                    m.remove(edge);
                    if m.is_empty() {
                        self.locations.remove(&key);
                    }
                }
                Ok(Event::Unlocated {
                    tenant: tenant.clone(),
                    ext: ext.clone(),
                    edge: edge.clone(),
                })
            }
            Command::Ring { .. }
            | Command::RingAnswered { .. }
            | Command::RingEnd { .. }
            | Command::Pickup { .. } => self.apply_ring(now, cmd),
            Command::Watch { .. } | Command::Unwatch { .. } => self.apply_watch(now, cmd),
        }
    }

    fn set_lot(&mut self, cfg: &LotConfig) -> Result<Event, Rejection> {
        cfg.validate().map_err(Rejection::BadLot)?;
        let key = cfg.key();
        for (k, l) in &self.lots {
            let Some(o) = &l.cfg else { continue };
            if *k == key || o.tenant != cfg.tenant {
                continue;
            }
            if o.first_slot <= cfg.last_slot && cfg.first_slot <= o.last_slot {
                return Err(Rejection::BadLot(format!(
                    "lot {} slots {}-{} overlap lot {} slots {}-{}",
                    cfg.park_ext,
                    cfg.first_slot,
                    cfg.last_slot,
                    o.park_ext,
                    o.first_slot,
                    o.last_slot
                )));
            }
            let inside = |ext: &str, c: &LotConfig| ext.parse::<u32>().is_ok_and(|e| c.contains(e));
            if inside(&cfg.park_ext, o) || inside(&o.park_ext, cfg) {
                return Err(Rejection::BadLot(format!(
                    "park extension of lot {} or {} lies in the other's slots",
                    cfg.park_ext, o.park_ext
                )));
            }
        }
        let lot = self.lots.entry(key.clone()).or_default();
        if let Some(s) = lot.slots.keys().find(|s| !cfg.contains(**s)) {
            return Err(Rejection::BadLot(format!(
                "slot {s} holds a call and is outside the new range"
            )));
        }
        lot.cfg = Some(cfg.clone());
        Ok(Event::LotSet(key))
    }

    fn park(
        &mut self,
        now: Millis,
        key: &LotKey,
        want: Option<u32>,
        call: &CallInfo,
    ) -> Result<Event, Rejection> {
        let lot = self.lots.get_mut(key).ok_or(Rejection::NoSuchLot)?;
        let cfg = lot.cfg.as_ref().ok_or(Rejection::NoSuchLot)?;
        let slot = match want {
            Some(s) if !cfg.contains(s) => return Err(Rejection::NotASlot(s)),
            Some(s) if lot.slots.contains_key(&s) => return Err(Rejection::SlotTaken(s)),
            Some(s) => s,
            None => pick(cfg, lot, |_| false).ok_or(Rejection::LotFull)?,
        };
        self.next_park += 1;
        let id = self.next_park;
        let deadline = now.saturating_add(cfg.parking_ms);
        lot.slots.insert(slot, id);
        lot.last_used = Some(slot);
        let p = Parked {
            id,
            lot: key.clone(),
            slot,
            call: call.clone(),
            parked_at: now,
            deadline,
            phase: Phase::Waiting,
            sent_to: None,
        };
        self.parks.insert(id, p.clone());
        self.deadlines.insert((deadline, id), ());
        Ok(Event::Parked(p))
    }

    fn claim(
        &mut self,
        tenant: &str,
        slot: u32,
        park: Option<ParkId>,
        by: &str,
    ) -> Result<Event, Rejection> {
        let (_, lot) = self
            .lot_of_slot(tenant, slot)
            .ok_or(Rejection::NotASlot(slot))?;
        let id = match (lot.slots.get(&slot), park) {
            (None, Some(p)) => return Err(Rejection::Gone(p)),
            (None, None) => return Err(Rejection::Empty(slot)),
            (Some(&id), Some(p)) if id != p => return Err(Rejection::Gone(p)),
            (Some(&id), _) => id,
        };
        let parked = self.remove(id)?;
        Ok(Event::Claimed {
            parked,
            by: by.to_string(),
        })
    }

    /// An edge's process is gone: the calls it held are lost, its registrations gone.
    /// `edge`'s lease is over (lapsed, or `released`): everything it held goes with it.
    fn end_lease(&mut self, edge: &str, released: bool) -> Result<Event, Rejection> {
        self.leases.remove(edge);
        self.incarnations.remove(edge);
        self.trunks.remove(edge);
        self.loads.remove(edge);
        self.draining.remove(edge);
        let lost = self.drop_edge(edge)?;
        Ok(Event::LeaseLapsed {
            edge: edge.to_string(),
            lost,
            rings: self.drop_rings(edge),
            released,
        })
    }

    fn drop_edge(&mut self, edge: &str) -> Result<Vec<Parked>, Rejection> {
        self.drop_watches(edge);
        for m in self.locations.values_mut() {
            m.remove(edge);
        }
        self.locations.retain(|_, m| !m.is_empty());
        let ids: Vec<ParkId> = self
            .parks
            .values()
            .filter(|p| p.call.edge == edge)
            .map(|p| p.id)
            .collect();
        let mut lost = Vec::with_capacity(ids.len());
        for id in ids {
            lost.push(self.remove(id)?);
        }
        Ok(lost)
    }

    fn expire(&mut self, now: Millis, id: ParkId) -> Result<Event, Rejection> {
        let p = self.parks.get_mut(&id).ok_or(Rejection::Gone(id))?;
        if p.phase != Phase::Waiting {
            // Already fired: a second Expire (a retried proposal, a second timer) is a no-op.
            return Err(Rejection::Gone(id));
        }
        if now < p.deadline {
            return Err(Rejection::NotDue {
                park: id,
                deadline: p.deadline,
            });
        }
        self.deadlines.remove(&(p.deadline, id));
        p.phase = Phase::Recalling {
            stage: RecallStage::Parker,
            since: now,
        };
        Ok(Event::Expired(p.clone()))
    }

    fn extend(&mut self, now: Millis, id: ParkId, by_ms: u64) -> Result<Event, Rejection> {
        let by_ms = in_range("extend by ms", by_ms, MAX_PARKING_MS)?;
        let p = self.parks.get_mut(&id).ok_or(Rejection::Gone(id))?;
        if p.phase != Phase::Waiting {
            return Err(Rejection::Recalling(id));
        }
        let deadline = p.deadline.saturating_add(by_ms);
        at_most(
            "deadline ahead ms",
            deadline.saturating_sub(now),
            MAX_PARKING_MS,
        )?;
        self.deadlines.remove(&(p.deadline, id));
        p.deadline = deadline;
        self.deadlines.insert((deadline, id), ());
        Ok(Event::Extended(p.clone()))
    }

    fn move_park(&mut self, now: Millis, id: ParkId, to: &str) -> Result<Event, Rejection> {
        let live = self.leases.get(to).is_some_and(|u| *u > now);
        let p = self.parks.get_mut(&id).ok_or(Rejection::Gone(id))?;
        if p.phase != Phase::Waiting {
            return Err(Rejection::Recalling(id));
        }
        if !live || self.draining.contains(to) || p.call.edge == to {
            return Err(Rejection::CannotMoveTo(to.to_string()));
        }
        let from = std::mem::replace(&mut p.call.edge, to.to_string());
        Ok(Event::Moved {
            parked: p.clone(),
            from,
        })
    }

    fn recall_stage(
        &mut self,
        now: Millis,
        id: ParkId,
        stage: RecallStage,
    ) -> Result<Event, Rejection> {
        let p = self.parks.get_mut(&id).ok_or(Rejection::Gone(id))?;
        if p.phase == Phase::Waiting {
            return Err(Rejection::NotRecalling(id));
        }
        if stage == RecallStage::Sent {
            // Only `Send` names where: an edge's stage change cannot.
            return Err(Rejection::SendNotAStage);
        }
        p.phase = Phase::Recalling { stage, since: now };
        p.sent_to = None;
        Ok(Event::RecallStage(p.clone()))
    }

    /// An operator sends a parked call to extension `to`: its edge rings it as it would a
    /// recall (the slot stays claimable meanwhile), whether the call waits or is recalled.
    fn send(&mut self, now: Millis, id: ParkId, to: &str) -> Result<Event, Rejection> {
        let p = self.parks.get(&id).ok_or(Rejection::Gone(id))?;
        // Unknown extensions too (no edge has said which there are): a desk that cannot ring
        // would only delay the recall.
        if !groups::is_extension(to) || self.has_extension(&p.lot.tenant, to) != Some(true) {
            return Err(Rejection::NoSuchExtension(to.to_string()));
        }
        let p = self.parks.get_mut(&id).expect("present");
        self.deadlines.remove(&(p.deadline, id));
        p.phase = Phase::Recalling {
            stage: RecallStage::Sent,
            since: now,
        };
        p.sent_to = Some(to.to_string());
        Ok(Event::Sent(p.clone()))
    }

    fn remove(&mut self, id: ParkId) -> Result<Parked, Rejection> {
        let p = self.parks.remove(&id).ok_or(Rejection::Gone(id))?;
        self.deadlines.remove(&(p.deadline, id));
        if let Some(lot) = self.lots.get_mut(&p.lot) {
            lot.slots.remove(&p.slot);
        }
        Ok(p)
    }

    fn lot_of_slot(&self, tenant: &str, slot: u32) -> Option<(&LotConfig, &Lot)> {
        self.lots.iter().find_map(|(k, l)| {
            let c = l.cfg.as_ref()?;
            (k.tenant == tenant && c.contains(slot)).then_some((c, l))
        })
    }
}

#[cfg(test)]
mod tests;
