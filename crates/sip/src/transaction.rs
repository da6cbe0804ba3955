//! RFC 3261 §17 transactions as sans-I/O state machines.
//!
//! A transaction never reads the clock or touches a socket: every entry point takes `now`, and
//! what it wants sent comes back as an action. The owner keeps them in a map, feeds them
//! messages and calls [`ClientTransaction::on_timeout`] / [`ServerTransaction::on_timeout`] when
//! [`poll_timeout`](ClientTransaction::poll_timeout) says so.
//!
//! | timer | meaning | value |
//! |---|---|---|
//! | A / E | request retransmit (unreliable), doubling (E capped at T2) | T1 |
//! | B / F | client gives up | 64·T1 |
//! | D | INVITE client absorbs response retransmissions | 32 s (0 reliable) |
//! | K | non-INVITE client absorbs retransmissions | T4 (0 reliable) |
//! | G | INVITE server retransmits a non-2xx final, doubling to T2 | T1 |
//! | H | INVITE server waits for ACK | 64·T1 |
//! | I | INVITE server absorbs ACK retransmissions | T4 (0 reliable) |
//! | J | non-INVITE server absorbs request retransmissions | 64·T1 (0 reliable) |

use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calling (INVITE client) / Trying (non-INVITE).
    Initial,
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026: after a 2xx to an INVITE, the transaction lingers for 64·T1 so that
    /// retransmissions (of the INVITE, or of the 2xx) are still matched.
    Accepted,
    Terminated,
}

/// What to do with a response a client transaction received.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Pass it to the transaction user.
    Deliver,
    /// Pass it on, and send the ACK for this non-2xx final (the owner builds it once and hands it
    /// over with [`ClientTransaction::set_ack`]).
    DeliverAndAck,
    /// A retransmission: resend the stored ACK, deliver nothing.
    ResendAck,
    /// A retransmission or a stray: drop it.
    Absorb,
}

/// What a timer expiry asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum TimerEvent {
    Nothing,
    Retransmit(Bytes),
    /// Timer B/F (client) or H (server): the peer never answered; tell the transaction user.
    TimedOut,
    /// The transaction is over and can be dropped.
    Terminated,
}

#[derive(Debug)]
pub struct ClientTransaction {
    pub kind: Kind,
    pub state: State,
    request: Bytes,
    ack: Option<Bytes>,
    reliable: bool,
    timing: Timing,
    retransmit_at: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

impl ClientTransaction {
    /// A transaction whose request has just been sent.
    pub fn new(kind: Kind, request: Bytes, reliable: bool, now: Instant, timing: Timing) -> Self {
        ClientTransaction {
            kind,
            state: State::Initial,
            request,
            ack: None,
            reliable,
            timing,
            retransmit_at: (!reliable).then(|| now + timing.t1),
            interval: timing.t1,
            deadline: now + 64 * timing.t1,
        }
    }

    /// The request, until a final response (empty after, except an INVITE's failure, whose ACK
    /// is built from it: it is never sent again, nor needed for a CANCEL).
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    pub fn set_ack(&mut self, ack: Bytes) {
        self.ack = Some(ack);
    }

    pub fn ack(&self) -> Option<&Bytes> {
        self.ack.as_ref()
    }

    pub fn on_response(&mut self, now: Instant, code: u16) -> ClientEvent {
        match (self.kind, self.state) {
            (_, State::Terminated) => ClientEvent::Absorb,
            // Further 2xx (retransmitted, or from another fork) go to the TU, which ACKs them.
            (Kind::Invite, State::Accepted) => {
                if (200..300).contains(&code) {
                    ClientEvent::Deliver
                } else {
                    ClientEvent::Absorb
                }
            }
            (Kind::Invite, State::Completed) => {
                if code >= 300 {
                    ClientEvent::ResendAck
                } else {
                    ClientEvent::Absorb
                }
            }
            (Kind::NonInvite, State::Completed) => ClientEvent::Absorb,
            (Kind::Invite, _) => match code {
                100..=199 => {
                    self.state = State::Proceeding;
                    self.retransmit_at = None;
                    // Once ringing, the callee may take minutes to answer: Timer C (a proxy's
                    // 3 minutes, RFC 3261 §16.6) replaces Timer B.
                    self.deadline = now + Duration::from_secs(180);
                    ClientEvent::Deliver
                }
                200..=299 => {
                    // ACK for 2xx is the TU's job; linger to catch retransmitted 2xx. The
                    // request is never sent again: not kept for the 32 s.
                    self.state = State::Accepted;
                    self.retransmit_at = None;
                    self.request = Bytes::new();
                    self.deadline = now + 64 * self.timing.t1;
                    ClientEvent::Deliver
                }
                _ => {
                    self.state = State::Completed;
                    self.retransmit_at = None;
                    self.deadline = now
                        + if self.reliable {
                            Duration::ZERO
                        } else {
                            Duration::from_secs(32)
                        };
                    ClientEvent::DeliverAndAck
                }
            },
            (Kind::NonInvite, _) => {
                if code < 200 {
                    self.state = State::Proceeding;
                    ClientEvent::Deliver
                } else {
                    self.state = State::Completed;
                    self.retransmit_at = None;
                    self.request = Bytes::new();
                    self.deadline = now
                        + if self.reliable {
                            Duration::ZERO
                        } else {
                            self.timing.t4
                        };
                    ClientEvent::Deliver
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Terminated {
            return None;
        }
        Some(match self.retransmit_at {
            Some(r) => r.min(self.deadline),
            None => self.deadline,
        })
    }

    pub fn on_timeout(&mut self, now: Instant) -> TimerEvent {
        if self.state == State::Terminated {
            return TimerEvent::Terminated;
        }
        if now >= self.deadline {
            let was = self.state;
            self.state = State::Terminated;
            return match was {
                State::Completed | State::Accepted => TimerEvent::Terminated,
                _ => TimerEvent::TimedOut,
            };
        }
        match self.retransmit_at {
            Some(at) if now >= at => {
                self.interval = match self.kind {
                    Kind::Invite => self.interval * 2,
                    // Timer E keeps doubling only to T2; once provisional, it sits at T2.
                    Kind::NonInvite if self.state == State::Proceeding => self.timing.t2,
                    Kind::NonInvite => (self.interval * 2).min(self.timing.t2),
                };
                self.retransmit_at = Some(now + self.interval);
                TimerEvent::Retransmit(self.request.clone())
            }
            _ => TimerEvent::Nothing,
        }
    }
}

#[derive(Debug)]
pub struct ServerTransaction {
    pub kind: Kind,
    pub state: State,
    last_response: Option<Bytes>,
    reliable: bool,
    timing: Timing,
    retransmit_at: Option<Instant>,
    interval: Duration,
    deadline: Option<Instant>,
}

impl ServerTransaction {
    pub fn new(kind: Kind, reliable: bool, timing: Timing) -> Self {
        ServerTransaction {
            kind,
            state: State::Proceeding,
            last_response: None,
            reliable,
            timing,
            retransmit_at: None,
            interval: timing.t1,
            deadline: None,
        }
    }

    /// The request arrived again: the last response to resend, if any.
    pub fn on_retransmission(&self) -> Option<Bytes> {
        match self.state {
            State::Proceeding | State::Completed | State::Accepted => self.last_response.clone(),
            _ => None,
        }
    }

    /// The TU knows the party has the 2xx (its ACK came): retransmissions of the INVITE, while
    /// the transaction lingers, are absorbed without resending it.
    pub fn forget_response(&mut self) {
        if self.kind == Kind::Invite && self.state == State::Accepted {
            self.last_response = None;
        }
    }

    /// Record a response the TU sends (the owner transmits it).
    pub fn respond(&mut self, now: Instant, code: u16, response: Bytes) {
        if self.state != State::Proceeding {
            return;
        }
        self.last_response = Some(response);
        if code < 200 {
            return;
        }
        match self.kind {
            Kind::Invite if code < 300 => {
                // The TU retransmits 2xx itself until the ACK (§13.3.1.4); the transaction
                // only absorbs INVITE retransmissions for 64·T1 (RFC 6026).
                self.state = State::Accepted;
                self.deadline = Some(now + 64 * self.timing.t1);
            }
            Kind::Invite => {
                self.state = State::Completed;
                if !self.reliable {
                    self.retransmit_at = Some(now + self.timing.t1);
                }
                self.deadline = Some(now + 64 * self.timing.t1);
            }
            Kind::NonInvite => {
                self.state = State::Completed;
                self.deadline = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        64 * self.timing.t1
                    },
                );
            }
        }
    }

    /// An ACK matched this (non-2xx) INVITE transaction.
    pub fn on_ack(&mut self, now: Instant) {
        if self.kind == Kind::Invite && self.state == State::Completed {
            self.state = State::Confirmed;
            self.retransmit_at = None;
            self.deadline = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timing.t4
                },
            );
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.deadline) {
            (Some(r), Some(d)) => Some(r.min(d)),
            (r, d) => r.or(d),
        }
    }

    pub fn on_timeout(&mut self, now: Instant) -> TimerEvent {
        if let Some(d) = self.deadline {
            if now >= d {
                let was = self.state;
                self.state = State::Terminated;
                self.deadline = None;
                self.retransmit_at = None;
                return if self.kind == Kind::Invite && was == State::Completed {
                    TimerEvent::TimedOut
                } else {
                    TimerEvent::Terminated
                };
            }
        }
        match (self.retransmit_at, &self.last_response) {
            (Some(at), Some(resp)) if now >= at => {
                self.interval = (self.interval * 2).min(self.timing.t2);
                self.retransmit_at = Some(now + self.interval);
                TimerEvent::Retransmit(resp.clone())
            }
            _ => TimerEvent::Nothing,
        }
    }
}

/// Retransmits a 2xx to an INVITE until the ACK arrives (RFC 3261 §13.3.1.4): T1 doubling to
/// T2, giving up after 64·T1. Used by the dialog layer, which owns 2xx reliability.
#[derive(Debug, Clone)]
pub struct Retransmitter {
    next: Instant,
    interval: Duration,
    t2: Duration,
    deadline: Instant,
}

impl Retransmitter {
    pub fn new(now: Instant, timing: Timing) -> Self {
        Retransmitter {
            next: now + timing.t1,
            interval: timing.t1,
            t2: timing.t2,
            deadline: now + 64 * timing.t1,
        }
    }

    pub fn poll_timeout(&self) -> Instant {
        self.next.min(self.deadline)
    }

    /// `Some(true)`: retransmit now; `Some(false)`: not yet; `None`: gave up.
    pub fn on_timeout(&mut self, now: Instant) -> Option<bool> {
        if now >= self.deadline {
            return None;
        }
        if now >= self.next {
            self.interval = (self.interval * 2).min(self.t2);
            self.next = now + self.interval;
            return Some(true);
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(tx: &mut ClientTransaction, until: Instant) -> (Vec<Duration>, Option<Duration>) {
        // Step virtual time from deadline to deadline, recording when retransmits happen.
        let start = until - Duration::from_secs(100);
        let mut sent = vec![];
        let mut now = start;
        while let Some(t) = tx.poll_timeout() {
            if t > until {
                break;
            }
            now = t;
            match tx.on_timeout(now) {
                TimerEvent::Retransmit(_) => sent.push(now - start),
                TimerEvent::TimedOut => return (sent, Some(now - start)),
                TimerEvent::Terminated => return (sent, None),
                TimerEvent::Nothing => {}
            }
        }
        let _ = now;
        (sent, None)
    }

    #[test]
    fn invite_client_timer_a_doubles_and_b_fires_at_64_t1() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(
            Kind::Invite,
            Bytes::from_static(b"INVITE"),
            false,
            t0,
            Timing::default(),
        );
        let (sent, timed_out) = drive(&mut tx, t0 + Duration::from_secs(100));
        let ms: Vec<u128> = sent.iter().map(|d| d.as_millis()).collect();
        // A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s after sending; B at 32 s.
        assert_eq!(ms, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(timed_out, Some(Duration::from_secs(32)));
    }

    #[test]
    fn non_invite_client_timer_e_caps_at_t2() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(Kind::NonInvite, Bytes::new(), false, t0, Timing::default());
        let (sent, timed_out) = drive(&mut tx, t0 + Duration::from_secs(100));
        let ms: Vec<u128> = sent.iter().map(|d| d.as_millis()).collect();
        assert_eq!(
            ms,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timed_out, Some(Duration::from_secs(32)));
    }

    #[test]
    fn reliable_client_never_retransmits() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(Kind::Invite, Bytes::new(), true, t0, Timing::default());
        let (sent, timed_out) = drive(&mut tx, t0 + Duration::from_secs(100));
        assert!(sent.is_empty());
        assert_eq!(timed_out, Some(Duration::from_secs(32)));
    }

    #[test]
    fn invite_client_acks_non_2xx_and_absorbs_retransmissions() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(Kind::Invite, Bytes::new(), false, t0, Timing::default());
        assert_eq!(tx.on_response(t0, 180), ClientEvent::Deliver);
        // Ringing: Timer C (3 minutes) replaces Timer B.
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(180)));
        assert_eq!(tx.on_response(t0, 486), ClientEvent::DeliverAndAck);
        assert_eq!(tx.on_response(t0, 486), ClientEvent::ResendAck);
        // Timer D: 32 s of absorbing, then gone without a timeout report.
        let d = tx.poll_timeout().unwrap();
        assert_eq!(d, t0 + Duration::from_secs(32));
        assert_eq!(tx.on_timeout(d), TimerEvent::Terminated);
    }

    #[test]
    fn invite_server_retransmits_non_2xx_until_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(Kind::Invite, false, Timing::default());
        tx.respond(t0, 486, Bytes::from_static(b"486"));
        let t = tx.poll_timeout().unwrap();
        assert_eq!(t, t0 + Duration::from_millis(500));
        assert_eq!(
            tx.on_timeout(t),
            TimerEvent::Retransmit(Bytes::from_static(b"486"))
        );
        assert_eq!(tx.poll_timeout(), Some(t + Duration::from_secs(1)));
        tx.on_ack(t);
        assert_eq!(tx.state, State::Confirmed);
        let i = tx.poll_timeout().unwrap();
        assert_eq!(i, t + Duration::from_secs(5));
        assert_eq!(tx.on_timeout(i), TimerEvent::Terminated);
    }

    #[test]
    fn invite_server_timer_h_reports_missing_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(Kind::Invite, true, Timing::default());
        tx.respond(t0, 404, Bytes::new());
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_secs(32)),
            TimerEvent::TimedOut
        );
    }

    #[test]
    fn non_invite_server_replays_final_response() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(Kind::NonInvite, false, Timing::default());
        assert_eq!(tx.on_retransmission(), None);
        tx.respond(t0, 200, Bytes::from_static(b"200"));
        assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"200")));
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    }

    #[test]
    fn what_lingers_after_a_2xx_keeps_no_copy_it_will_not_send() {
        let t0 = Instant::now();
        // Client: the INVITE is never resent once answered.
        let inv = Bytes::from_static(b"INVITE sip:x SIP/2.0");
        let mut c = ClientTransaction::new(Kind::Invite, inv, false, t0, Timing::default());
        assert_eq!(c.on_response(t0, 200), ClientEvent::Deliver);
        assert!(c.request().is_empty());
        assert_eq!(
            c.on_response(t0, 200),
            ClientEvent::Deliver,
            "2xx retransmissions still reach the TU"
        );
        // Server: the 2xx is resent for INVITE retransmissions until the ACK says it arrived.
        let mut s = ServerTransaction::new(Kind::Invite, false, Timing::default());
        s.respond(t0, 200, Bytes::from_static(b"200"));
        assert_eq!(s.on_retransmission(), Some(Bytes::from_static(b"200")));
        s.forget_response();
        assert_eq!(s.on_retransmission(), None);
        assert_eq!(s.state, State::Accepted);
    }

    #[test]
    fn retransmitter_gives_up_after_64_t1() {
        let t0 = Instant::now();
        let mut r = Retransmitter::new(t0, Timing::default());
        let mut n = 0;
        loop {
            let t = r.poll_timeout();
            match r.on_timeout(t) {
                Some(true) => n += 1,
                Some(false) => {}
                None => break,
            }
        }
        // 0.5, 1.5, 3.5, 7.5, 11.5, … 31.5 s: 10 retransmissions before 32 s.
        assert_eq!(n, 10);
    }
}
