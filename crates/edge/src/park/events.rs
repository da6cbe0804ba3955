//! What park hears from below and from the registry: the outcomes of its own proposals (each
//! continued as it said when it proposed), the orbit events applied on any site (a recall on
//! `Expired`, a hand-over on `Claimed`, calls lost with a lapsed lease), and the calls that
//! ended (their entries dropped).

use super::*;

/// How a park flow continues once its command's outcome is known.
pub(crate) enum ParkThen {
    Park(AfterPark),
    Retrieve(AfterClaim),
    RecallClaim(AfterRecallClaim),
    /// A claimed call never fetched, parked again ([`repark_outcome`]).
    Repark(Parked),
    /// A held park handed to another edge ([`move_outcome`]).
    Move(ParkId),
}

impl Parking {
    /// A park layer over `b2bua`, with the lots' music and the default lot.
    pub(crate) fn new(
        b2bua: Calls,
        music: HashMap<String, Arc<Clip>>,
        default_lot: Option<LotKey>,
    ) -> Parking {
        Parking {
            b2bua,
            park: Parks {
                music,
                default_lot,
                ..Default::default()
            },
            handover: Handover::default(),
            then: HashMap::new(),
        }
    }

    /// Have `cmd` ordered and continue with `then` once its outcome is known.
    pub(crate) fn propose_then(&mut self, now: Instant, cmd: Command, then: ParkThen) {
        let token = self.b2bua.propose(now, cmd, Then::Feature(Feature::Park));
        self.then.insert(token, then);
    }

    /// The outcome of park's proposal `token`.
    pub(crate) fn continue_with(&mut self, now: Instant, token: u64, outcome: Outcome) {
        match self.then.remove(&token) {
            Some(ParkThen::Park(a)) => park_outcome(self, now, a, outcome),
            Some(ParkThen::Retrieve(a)) => claim_outcome(self, now, a, outcome),
            Some(ParkThen::RecallClaim(a)) => recall_claim_outcome(self, now, a, outcome),
            Some(ParkThen::Repark(p)) => repark_outcome(self, now, p, outcome),
            Some(ParkThen::Move(park)) => move_outcome(self, now, park, outcome),
            None => {}
        }
    }

    /// Drop what park keeps for the calls that ended or are ending; whether there were any.
    pub(crate) fn after_calls(&mut self, now: Instant) -> bool {
        if self.b2bua.ending.is_empty() && self.b2bua.ended.is_empty() {
            return false;
        }
        for id in std::mem::take(&mut self.b2bua.ending) {
            cancel_recall(self, now, id);
        }
        for (id, why) in std::mem::take(&mut self.b2bua.ended) {
            on_call_end(self, now, id, why);
        }
        true
    }

    /// How long call `id` may go without media: a parked call longer (its phone may send
    /// nothing while it listens to the music).
    pub(crate) fn silence_limit(&self, id: u64) -> Duration {
        match self.park.held.get(&id) {
            Some(ps) => parked_timeout(self, ps),
            None => Duration::from_secs(self.cfg.media.timeout_secs),
        }
    }

    /// The registry's whole state was replaced: calls this edge holds that it no longer has
    /// were lost with a lapsed lease, but those claimed and waiting for their claimant (a claim
    /// takes the park out of the state; the fetch wait puts it back if nobody comes).
    pub(crate) fn resynced(&mut self, now: Instant) {
        // The state now shows every claim committed: none is awaited from the watch.
        self.park.claimed_here.clear();
        let gone: Vec<_> = self
            .park
            .by_id
            .iter()
            .filter(|(id, _)| {
                self.orbit.parked(**id).is_none()
                    && !self.orbit.is_future(**id)
                    && !self.handover.is_claimed(**id)
                    // Offered here and not ours yet: its party is another edge's.
                    && !on_probation(self, **id)
            })
            .map(|(&id, &cid)| (id, cid))
            .collect();
        for (id, cid) in gone {
            lost(self, now, id, cid);
        }
    }

    /// React to an applied event, whichever site caused it.
    pub(crate) fn on_orbit_event(&mut self, now: Instant, ev: &Event) {
        let site = self.id.clone();
        if let Event::Claimed { parked, by } = ev {
            super::given_up_committed(self, now, parked, by);
        }
        match ev {
            Event::Parked(p) if p.call.edge == site => adopt_repark(self, now, p),
            Event::Ended {
                parked,
                reason: EndReason::Operator,
            } if parked.call.edge == site => {
                if let Some(&cid) = self.park.by_id.get(&parked.id) {
                    super::ended_by_operator(self, now, parked.id, cid);
                }
            }
            Event::Claimed { parked, .. } | Event::Ended { parked, .. }
                if on_probation(self, parked.id) =>
            {
                on_taken_elsewhere(self, parked.id)
            }
            Event::Claimed { parked, by } if parked.call.edge == site => {
                self.stats.claims += 1;
                self.park.claimed_here.remove(&parked.id);
                if !super::recall_claim_shown(self, now, parked.id, by) {
                    on_claimed(self, now, parked, by)
                }
            }
            Event::Expired(p) if p.call.edge == site && self.park.claimed_here.contains(&p.id) => {
                info!(
                    park = p.id,
                    "expiry of a park this edge already claimed: no recall"
                );
            }
            Event::Expired(p) if p.call.edge == site => {
                // How late the deadline fired, by the time stamped on the Expire (the
                // leader's across sites): zero unless a failover or a stall delayed it.
                if let orbit_state::Phase::Recalling { since, .. } = p.phase {
                    let late = since.saturating_sub(p.deadline);
                    self.stats.latency("recall_late", late as f64 / 1000.0);
                    info!(
                        park = p.id,
                        slot = p.slot,
                        late_ms = since.saturating_sub(p.deadline),
                        "parked call expired"
                    );
                }
                if let Some(&cid) = self.park.by_id.get(&p.id) {
                    self.stats.recalls += 1;
                    start_recall(self, now, cid, RecallStage::Parker);
                } else {
                    // Ours by the record, but no call here holds it (it hung up between a
                    // claim and a re-park): nobody would ever recall or end it.
                    warn!(
                        park = p.id,
                        slot = p.slot,
                        "expired park held by no call here"
                    );
                    let end = Command::End {
                        park: p.id,
                        reason: EndReason::Lost,
                    };
                    self.propose(now, end, Then::Nothing);
                }
            }
            Event::Sent(p) if p.call.edge == site => on_sent(self, now, p),
            Event::EdgeRestarted { edge, lost, .. } if *edge != site && lost.is_empty() => {
                info!("{edge} restarted")
            }
            Event::EdgeRestarted { edge, lost, .. } if *edge != site => {
                warn!(
                    lost = lost.len(),
                    "{edge} restarted: the calls it held are lost"
                );
            }
            Event::Moved { parked, from } if parked.call.edge == site => {
                on_moved_here(self, now, parked, from)
            }
            Event::Moved { parked, from } if *from == site => on_moved_away(self, now, parked.id),
            Event::LeaseLapsed {
                edge,
                released: true,
                ..
            } if *edge != site => info!("{edge} left"),
            Event::LeaseLapsed { edge, lost, .. } if *edge != site => {
                warn!(
                    lost = lost.len(),
                    "lease of {edge} lapsed: its parked calls are lost"
                );
            }
            Event::LeaseLapsed {
                edge,
                lost: gone,
                released,
                ..
            } => {
                // Released: this edge left on purpose (a drain), with nothing held.
                if *released && gone.is_empty() {
                    debug!(site = %edge, "our lease released");
                } else {
                    warn!(site = %edge, lost = gone.len(), "our lease lapsed: parked calls are lost");
                }
                self.port.lease_until = None;
                for p in gone {
                    if let Some(&cid) = self.park.by_id.get(&p.id) {
                        lost(self, now, p.id, cid);
                    }
                }
            }
            _ => {}
        }
    }
}

/// An operator sent a park held here to an extension: ring it, as a recall would.
fn on_sent(edge: &mut Parking, now: Instant, p: &orbit_state::Parked) {
    let Some(&cid) = edge.park.by_id.get(&p.id) else {
        // Held here by the record, but by no call: nobody would ever end it (a sent park has
        // no deadline any more).
        warn!(park = p.id, slot = p.slot, "sent park held by no call here");
        let end = Command::End {
            park: p.id,
            reason: EndReason::Lost,
        };
        edge.propose(now, end, Then::Nothing);
        return;
    };
    let claiming = edge
        .park
        .held
        .get(&cid)
        .and_then(|ps| ps.recall.as_ref())
        .is_some_and(|r| r.claiming.is_some());
    if claiming {
        // A recall phone answered and claims the call now: it was first.
        info!(
            park = p.id,
            slot = p.slot,
            "sent while a recall answer is claimed: the answer goes first"
        );
        return;
    }
    info!(park = p.id, slot = p.slot, to = ?p.sent_to, "parked call sent by an operator");
    cancel_recall(edge, now, cid);
    start_recall(edge, now, cid, RecallStage::Sent);
}
