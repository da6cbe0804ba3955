//! The edge's transaction layer (RFC 3261 §17): server and client transactions in tables keyed
//! by typed keys, their timers, and the two ways out of the core: answering a request through
//! its server transaction ([`Services::reply`]) and sending a request as a client transaction
//! ([`Services::send_request`]).
//!
//! Two rules keep strangers out at this floor: a response is taken only from the flow its
//! request went to (a forged 200 from elsewhere answers nothing), and the server transaction
//! table is bounded: when it is full, new requests are answered without keeping state
//! ([`crate::router`]). Each client transaction names its owner ([`Owner`]); its responses
//! and its timeout are handed up as a [`Delivery`] for that feature and no other.

use std::time::{Duration, Instant};

use bytes::Bytes;
use orbit_sip::build::{ack_for_failure, Response};
use orbit_sip::dialog::{same_flow, Dialog};
use orbit_sip::key::{ClientKey, ServerKey};
use orbit_sip::message::Message;
use orbit_sip::transaction::{
    ClientEvent, ClientTransaction, Kind, ServerTransaction, State, TimerEvent,
};
use orbit_sip::transport::Flow;
use tracing::{debug, warn};

use super::{Services, Side, TimerKey, Transmit};

pub(crate) struct ServerEntry {
    pub tx: ServerTransaction,
    pub flow: Flow,
    /// What the entry is counted as against the table's byte budget: its request's size (a
    /// response echoes its Vias, From, To and Call-ID, so it is about as large).
    size: usize,
    /// When the request came (a request never answered is dropped after [`UNANSWERED`]).
    opened: Instant,
}

/// The table's byte budget per transaction it may hold: besides its count, the table holds at
/// most `max_transactions` × this many bytes of requests (512 MB at the default count), since
/// 2^20 large requests (every Via a stranger cares to send) would be many gigabytes.
const BYTES_PER_TRANSACTION: usize = 512;

/// The longest a request may wait for our answer. Every path answers sooner (an INVITE rings
/// for at most Timer C, 3 min); this bounds what a path that forgets would leave in the
/// capped table: by then the sender has given up on it anyway. Checked by a sweep of the
/// table every [`SWEEP_EVERY`], not by a timer per request: a timer set 200 s ahead for
/// every request kept hundreds of thousands of stale entries in the timer queue at a few
/// thousand calls per second.
pub(crate) const UNANSWERED: Duration = Duration::from_secs(200);
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Who gets the responses of a client transaction.
#[derive(Clone)]
pub(crate) enum Owner {
    /// One fork of a call's outgoing INVITE.
    Branch { call: u64, idx: usize },
    /// An in-dialog request relayed from the other side; the response goes back to `stx`.
    Relay {
        call: u64,
        /// The side that sent the request (known, not guessed from a Call-ID both sides
        /// could carry).
        from: Side,
        stx: ServerKey,
        req: Box<Message>,
    },
    /// A request of our own whose answer only matters to the call (BYE at teardown).
    Bye { call: u64 },
    /// One fork of a recall (the parker's phones, then the fallback).
    Recall { call: u64, attempt: u32, idx: usize },
    /// A NOTIFY about a REFER's progress; `bye`: end that side's dialog once it is answered.
    ReferNotify { call: u64, bye: Option<Side> },
    /// A lamp NOTIFY: a refusal ends the subscription.
    Lamp { sub: (String, String) },
    /// A draining edge offering parked call `park` to another (`park/moving.rs`).
    MoveOffer { park: orbit_state::ParkId },
    /// The re-INVITE that points a moved parked call's party here.
    MovedHere {
        park: orbit_state::ParkId,
        attempt: u32,
    },
    /// Nobody (CANCEL, stray BYE to a late fork).
    Nobody,
}

pub(crate) struct ClientEntry {
    pub tx: ClientTransaction,
    pub flow: Flow,
    pub owner: Owner,
    /// The earliest time a timer is queued for this transaction ([`Services::schedule_client`]).
    queued: Option<Instant>,
}

impl Services {
    /// Open the server transaction of a new request; false when the table is full (the
    /// request is then answered without state).
    pub(crate) fn open_server(
        &mut self,
        key: &ServerKey,
        invite: bool,
        flow: Flow,
        size: usize,
    ) -> bool {
        if self.stx.len() >= self.cfg.limits.max_transactions
            || self.stx_bytes + size > self.cfg.limits.max_transactions * BYTES_PER_TRANSACTION
        {
            return false;
        }
        self.stx_bytes += size;
        let kind = if invite {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        self.stx.insert(
            key.clone(),
            Box::new(ServerEntry {
                tx: ServerTransaction::new(kind, flow.proto.reliable(), self.timing),
                flow,
                size,
                opened: self.last_now,
            }),
        );
        true
    }

    /// Drop the server transactions whose request has waited [`UNANSWERED`] for an answer,
    /// but those `ringing` says are still ringing (a callee's 1xx restarts Timer C: such a
    /// call is answered when it ends, however long that is).
    pub(crate) fn sweep_unanswered(&mut self, now: Instant, ringing: impl Fn(&ServerKey) -> bool) {
        let stale: Vec<ServerKey> = self
            .stx
            .iter()
            .filter(|(k, e)| {
                matches!(e.tx.state, State::Initial | State::Proceeding)
                    && now.saturating_duration_since(e.opened) >= UNANSWERED
                    && !ringing(k)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(first) = stale.first() {
            // Every path answers sooner: a request left unanswered is a path that forgot.
            warn!(count = stale.len(), method = %first.method, "requests never answered: transactions dropped");
        }
        for key in stale {
            self.drop_server(&key);
        }
    }

    /// Answer a request through its server transaction. A response that needs our tag and
    /// was given none gets a fresh one.
    pub(crate) fn reply(&mut self, now: Instant, key: &ServerKey, r: Response<'_>) {
        let tag;
        let r = if r.needs_tag() {
            tag = self.ids.tag();
            r.tag(&tag)
        } else {
            r
        };
        let bytes = r.encode(key.source);
        self.reply_bytes(now, key, r.code(), bytes);
    }

    pub(crate) fn reply_bytes(&mut self, now: Instant, key: &ServerKey, code: u16, bytes: Bytes) {
        let Some(e) = self.stx.get_mut(key) else {
            return;
        };
        e.tx.respond(now, code, bytes.clone());
        let f = e.flow;
        self.stats.answered(code);
        if let Some(t) = e.tx.poll_timeout() {
            self.timers.schedule(t, TimerKey::Server(key.clone()));
        }
        self.send(f, bytes);
    }

    /// Answer a request without a transaction (the table is full): nothing is kept, a
    /// retransmission is answered again the same way.
    pub(crate) fn reply_stateless(&mut self, flow: Flow, r: Response<'_>) {
        let tag;
        let r = if r.needs_tag() {
            tag = self.ids.tag();
            r.tag(&tag)
        } else {
            r
        };
        let bytes = r.encode(flow.addr);
        self.stats.answered(r.code());
        self.send(flow, bytes);
    }

    /// Send a new request as a client transaction.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        flow: Flow,
        key: ClientKey,
        invite: bool,
        bytes: Bytes,
        owner: Owner,
    ) {
        let kind = if invite {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let tx =
            ClientTransaction::new(kind, bytes.clone(), flow.proto.reliable(), now, self.timing);
        self.ctx.insert(
            key.clone(),
            Box::new(ClientEntry {
                tx,
                flow,
                owner,
                queued: None,
            }),
        );
        self.schedule_client(&key);
        self.send(flow, bytes);
    }

    /// Send a request of ours (`method`, not INVITE) in dialog `d`, counting its CSeq up, as a
    /// client transaction whose answer goes to `owner`.
    pub(crate) fn send_in_dialog(
        &mut self,
        now: Instant,
        d: &mut Dialog,
        method: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
        owner: Owner,
    ) {
        d.local_cseq += 1;
        let branch = self.new_branch();
        let bytes = d.request(
            &self.local,
            method,
            d.local_cseq,
            &branch.branch,
            extra,
            body,
        );
        self.send_request(now, d.flow, branch, false, bytes, owner);
    }

    /// A new branch for a request we send, as its client transaction's key.
    pub(crate) fn new_branch(&mut self) -> ClientKey {
        ClientKey::new(&self.ids.branch())
    }

    /// Queue the transaction's next deadline, unless an earlier one is queued already (its
    /// handler queues the next): a deadline moved later and then earlier again would
    /// otherwise leave stale entries behind. An INVITE's Timer C, 180 s ahead once the callee
    /// rings, replaced by Timer J's 32 s when it answers, kept one entry per call in the queue
    /// for three minutes at a few thousand calls a second.
    pub(crate) fn schedule_client(&mut self, key: &ClientKey) {
        let Some(e) = self.ctx.get_mut(key) else {
            return;
        };
        let Some(t) = e.tx.poll_timeout() else {
            return;
        };
        if e.queued.is_none_or(|q| t < q) {
            e.queued = Some(t);
            self.timers.schedule(t, TimerKey::Client(key.clone()));
        }
    }

    /// A response arrived over `flow`: to its client transaction, if it came from where the
    /// request went; handed up for the transaction's owner when it is news.
    pub(crate) fn on_response(
        &mut self,
        now: Instant,
        flow: Flow,
        msg: Message,
    ) -> Option<Delivery> {
        let key = ClientKey::of_response(&msg)?;
        let Some(entry) = self.ctx.get_mut(&key) else {
            debug!(code = msg.code(), "response matches no transaction");
            return None;
        };
        if !same_flow(&entry.flow, &flow) {
            debug!(code = msg.code(), from = %flow.addr, to = %entry.flow.addr, "response from elsewhere than the request went: dropped");
            return None;
        }
        let code = msg.code();
        match entry.tx.on_response(now, code) {
            ClientEvent::Absorb => None,
            ClientEvent::ResendAck => {
                if let Some(a) = entry.tx.ack().cloned() {
                    let f = entry.flow;
                    self.send(f, a);
                }
                None
            }
            ev => {
                if ev == ClientEvent::DeliverAndAck {
                    if let Some(ack) = ack_for_failure(entry.tx.request(), &msg) {
                        entry.tx.set_ack(ack.clone());
                        let f = entry.flow;
                        self.out.push(Transmit {
                            flow: f,
                            bytes: ack,
                        });
                    }
                }
                let (owner, flow) = (entry.owner.clone(), entry.flow);
                self.schedule_client(&key);
                Some(Delivery {
                    key,
                    owner,
                    flow,
                    response: Some(msg),
                })
            }
        }
    }

    pub(crate) fn server_timer(&mut self, now: Instant, key: ServerKey) {
        let Some(e) = self.stx.get_mut(&key) else {
            return;
        };
        match e.tx.poll_timeout() {
            Some(t) if t <= now => {}
            _ => return, // stale timer entry
        }
        match e.tx.on_timeout(now) {
            TimerEvent::Retransmit(b) => {
                let f = e.flow;
                if let Some(t) = e.tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Server(key));
                }
                self.send(f, b);
            }
            TimerEvent::Nothing => {
                if let Some(t) = e.tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Server(key));
                }
            }
            TimerEvent::TimedOut | TimerEvent::Terminated => {
                self.drop_server(&key);
            }
        }
    }

    /// A client transaction's timer; its timeout is handed up for its owner.
    pub(crate) fn client_timer(&mut self, now: Instant, key: ClientKey) -> Option<Delivery> {
        let e = self.ctx.get_mut(&key)?;
        // The queued entry has popped: nothing earlier is queued now.
        if e.queued.is_some_and(|q| q <= now) {
            e.queued = None;
        }
        match e.tx.poll_timeout() {
            Some(t) if t <= now => {}
            _ => {
                self.schedule_client(&key);
                return None;
            }
        }
        match e.tx.on_timeout(now) {
            TimerEvent::Retransmit(b) => {
                let f = e.flow;
                self.schedule_client(&key);
                self.send(f, b);
                None
            }
            TimerEvent::Nothing => {
                self.schedule_client(&key);
                None
            }
            TimerEvent::TimedOut => {
                let e = self.ctx.remove(&key)?;
                Some(Delivery {
                    key,
                    owner: e.owner,
                    flow: e.flow,
                    response: None,
                })
            }
            TimerEvent::Terminated => {
                self.ctx.remove(&key);
                None
            }
        }
    }

    fn drop_server(&mut self, key: &ServerKey) {
        if let Some(e) = self.stx.remove(key) {
            self.stx_bytes -= e.size;
        }
    }

    /// Server transactions held (tests: the table's bound).
    pub fn server_transactions(&self) -> usize {
        self.stx.len()
    }
}

/// A response to a client transaction (or its timeout, `response: None`), for its owner.
pub(crate) struct Delivery {
    pub key: ClientKey,
    pub owner: Owner,
    /// Where the request went (and the response came from).
    pub flow: Flow,
    pub response: Option<Message>,
}
