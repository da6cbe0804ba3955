//! What an operator sees of this edge and may do to it (the edge's admin listener, served by
//! the daemon): its calls, its registrations, hanging a call up, and whether it is ready for
//! new calls (a load balancer's or Kubernetes' readiness).

use std::time::Instant;

use crate::core::Edge;

/// A call as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    pub id: u64,
    /// The caller's and callee's users as the call's dialogs name them.
    pub caller: String,
    pub callee: String,
    /// "ringing", "answered", "up", "ending", or "parked".
    pub state: &'static str,
    /// How long it has been going, in seconds.
    pub secs: u64,
    /// The slot it is parked in, if it is.
    pub slot: Option<u32>,
}

/// A registration as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationView {
    pub ext: String,
    pub contact: String,
    /// "udp", "tcp" or "tls".
    pub transport: &'static str,
    /// Where the phone's requests come from.
    pub source: std::net::SocketAddr,
    pub expires_secs: u64,
}

impl Edge {
    /// The calls up or ringing here, oldest first.
    pub fn calls_view(&self, now: Instant) -> Vec<CallView> {
        let mut v: Vec<CallView> = self
            .calls
            .values()
            .map(|c| {
                let parked = self.park.held.get(&c.id);
                let state = match (parked, c.state()) {
                    (Some(_), _) => "parked",
                    (None, crate::call::CallState::Ringing) => "ringing",
                    (None, crate::call::CallState::Answered) => "answered",
                    (None, crate::call::CallState::Confirmed) => "up",
                    (None, crate::call::CallState::Ending) => "ending",
                };
                CallView {
                    id: c.id,
                    caller: c.a.user.clone(),
                    callee: c.b.user.clone(),
                    state,
                    secs: now.saturating_duration_since(c.started()).as_secs(),
                    slot: parked.map(|p| p.slot),
                }
            })
            .collect();
        v.sort_by_key(|c| (std::cmp::Reverse(c.secs), c.id));
        v
    }

    /// The phones registered here, by extension.
    pub fn registrations_view(&self, now: Instant) -> Vec<RegistrationView> {
        let mut v: Vec<RegistrationView> = self
            .registrar
            .all()
            .filter(|(_, b)| b.expires_at > now)
            .map(|(ext, b)| RegistrationView {
                ext: ext.to_string(),
                contact: b.contact.clone(),
                transport: match b.flow.proto {
                    orbit_sip::transport::Proto::Udp => "udp",
                    orbit_sip::transport::Proto::Tcp => "tcp",
                    orbit_sip::transport::Proto::Tls => "tls",
                },
                source: b.flow.addr,
                expires_secs: b.expires_at.saturating_duration_since(now).as_secs(),
            })
            .collect();
        v.sort_by(|a, b| (&a.ext, &a.contact).cmp(&(&b.ext, &b.contact)));
        v
    }

    /// Hang call `id` up (BYE to its parties, or 487 and CANCEL while it rings); a parked
    /// call's slot is freed as when its caller hangs up. False if there is no such call.
    pub fn hang_up_call(&mut self, now: Instant, id: u64) -> bool {
        if !self.calls.contains_key(&id) {
            return false;
        }
        crate::park::hangup(&mut self.picking.parking, now, id, "hung up by an operator");
        self.settle(now);
        true
    }

    /// Whether this edge takes new calls: it is not draining and, with a registry, its lease
    /// is known to hold (without one, nothing it parks could be ordered).
    pub fn ready(&self, now: Instant) -> bool {
        self.draining.is_none() && self.lease_holds(now)
    }
}
