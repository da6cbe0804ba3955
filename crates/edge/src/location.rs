//! The location service (RFC 3261 §10.3): extension → contacts, each with the flow it
//! registered over (requests to the contact go back over that flow: we never send to an
//! address merely named in a Contact header), its expiry and the Call-ID/CSeq that last
//! refreshed it; and the [`Target`]s a call forks to. REGISTER requests write it
//! ([`crate::registrar`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use orbit_sip::transport::Flow;

#[derive(Debug, Clone)]
pub struct Binding {
    /// The Contact URI as registered.
    pub contact: String,
    pub flow: Flow,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
}

/// One Contact of a REGISTER, with the expiry that applies to it.
#[derive(Debug, Clone)]
pub struct ContactUpdate {
    pub contact: String,
    pub expires: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A request older than the binding it would change (RFC 3261 §10.3 step 7).
    OutOfOrder,
    /// Expiry below the minimum: 423 with Min-Expires.
    TooBrief,
    /// More contacts than an extension may have: 403.
    TooMany,
}

/// Contacts one extension may hold at once (desk phone, softphones, mobile…); more would let
/// one authenticated user grow the table without bound.
pub const MAX_CONTACTS: usize = 10;

#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Vec<Binding>>,
}

impl Registrar {
    /// Apply a REGISTER's contacts for `aor`. `None` contacts means "remove all" (`Contact: *`).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        now: Instant,
        aor: &str,
        contacts: Option<&[ContactUpdate]>,
        flow: Flow,
        call_id: &str,
        cseq: u32,
        min_expires: u32,
    ) -> Result<(), RegisterError> {
        let list = self.bindings.entry(aor.to_string()).or_default();
        list.retain(|b| b.expires_at > now);
        let Some(contacts) = contacts else {
            if list.iter().any(|b| b.call_id == call_id && b.cseq >= cseq) {
                return Err(RegisterError::OutOfOrder);
            }
            list.clear();
            return Ok(());
        };
        for c in contacts {
            if c.expires != 0 && c.expires < min_expires {
                return Err(RegisterError::TooBrief);
            }
            if let Some(b) = list.iter().find(|b| same_contact(&b.contact, &c.contact)) {
                if b.call_id == call_id && b.cseq >= cseq {
                    return Err(RegisterError::OutOfOrder);
                }
            }
        }
        let adding = contacts
            .iter()
            .filter(|c| c.expires > 0 && !list.iter().any(|b| same_contact(&b.contact, &c.contact)))
            .count();
        if list.len() + adding > MAX_CONTACTS {
            return Err(RegisterError::TooMany);
        }
        for c in contacts {
            list.retain(|b| !same_contact(&b.contact, &c.contact));
            if c.expires > 0 {
                list.push(Binding {
                    contact: c.contact.clone(),
                    flow,
                    expires_at: now + Duration::from_secs(c.expires as u64),
                    call_id: call_id.to_string(),
                    cseq,
                });
            }
        }
        if list.is_empty() {
            self.bindings.remove(aor);
        }
        Ok(())
    }

    /// Current (unexpired) bindings of an extension.
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<Binding> {
        self.bindings
            .get(aor)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default()
    }

    /// Drop bindings whose connection closed (TCP/TLS): the phone must re-register.
    pub fn flow_closed(&mut self, flow: &Flow) {
        self.bindings.retain(|_, l| {
            l.retain(|b| b.flow != *flow);
            !l.is_empty()
        });
    }

    pub fn expire(&mut self, now: Instant) {
        self.bindings.retain(|_, l| {
            l.retain(|b| b.expires_at > now);
            !l.is_empty()
        });
    }

    /// Every binding, with its address of record.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Binding)> {
        self.bindings
            .iter()
            .flat_map(|(aor, bs)| bs.iter().map(move |b| (aor.as_str(), b)))
    }

    pub fn count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }
}

/// Contact URIs compare as URIs; a textual compare ignoring case of scheme/host is close
/// enough for refreshes from the same phone, which resends the same text.
fn same_contact(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// What a trunk INVITE claims, won in the registry by the sending edge: a parked call held
/// here (retrieve), or a call ringing here (pickup); with the registry log index the claim was
/// committed at (0: not said), which the holding edge's replica must reach to show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    Park(orbit_state::ParkId, u64),
    Ring(orbit_state::RingId, u64),
}

impl Claim {
    /// `7`, `ring-3`: the claim as `X-Orbit-Claim` says it, and as signed. The index goes in
    /// a header of its own, which edges of before it do not read.
    pub(crate) fn text(self) -> String {
        match self {
            Claim::Park(p, _) => p.to_string(),
            Claim::Ring(r, _) => format!("ring-{r}"),
        }
    }

    /// The claim in `s` (`X-Orbit-Claim`), committed at `at`.
    pub(crate) fn parse(s: &str, at: u64) -> Option<Claim> {
        match s.strip_prefix("ring-") {
            Some(r) => r.parse().ok().map(|r| Claim::Ring(r, at)),
            None => s.parse().ok().map(|p| Claim::Park(p, at)),
        }
    }

    /// The log index it was committed at (0: not said).
    pub(crate) fn at(self) -> u64 {
        match self {
            Claim::Park(_, at) | Claim::Ring(_, at) => at,
        }
    }
}

/// Where one fork of an INVITE goes: a phone registered here, or another site's edge.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub flow: Flow,
    pub uri: String,
    /// Over the trunk: the peer edge's site, and what this edge claimed (a parked call it
    /// retrieves, a ringing call it picks up).
    pub trunk: Option<(String, Option<Claim>)>,
}

impl Target {
    pub(crate) fn phone(b: &Binding) -> Target {
        Target {
            flow: b.flow,
            uri: b.contact.clone(),
            trunk: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orbit_sip::transport::Proto;

    fn flow() -> Flow {
        Flow {
            proto: Proto::Udp,
            addr: "127.0.0.1:5062".parse().unwrap(),
            conn: 0,
        }
    }

    fn c(contact: &str, expires: u32) -> ContactUpdate {
        ContactUpdate {
            contact: contact.into(),
            expires,
        }
    }

    #[test]
    fn register_refresh_expire_unregister() {
        let t0 = Instant::now();
        let mut r = Registrar::default();
        r.update(
            t0,
            "1001",
            Some(&[c("sip:a@h", 60), c("sip:b@h", 120)]),
            flow(),
            "x",
            1,
            60,
        )
        .unwrap();
        assert_eq!(r.lookup(t0, "1001").len(), 2);
        // Out of order CSeq on the same Call-ID.
        assert_eq!(
            r.update(t0, "1001", Some(&[c("sip:a@h", 60)]), flow(), "x", 1, 60),
            Err(RegisterError::OutOfOrder)
        );
        assert_eq!(
            r.update(t0, "1001", Some(&[c("sip:a@h", 5)]), flow(), "x", 2, 60),
            Err(RegisterError::TooBrief)
        );
        // Expiry in virtual time: a is gone after 60 s, b stays.
        let t1 = t0 + Duration::from_secs(61);
        let l = r.lookup(t1, "1001");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].contact, "sip:b@h");
        // Expires: 0 removes one contact; `*` removes all.
        r.update(t1, "1001", Some(&[c("sip:b@h", 0)]), flow(), "x", 3, 60)
            .unwrap();
        assert!(r.lookup(t1, "1001").is_empty());
        r.update(t1, "1001", Some(&[c("sip:a@h", 60)]), flow(), "x", 4, 60)
            .unwrap();
        r.update(t1, "1001", None, flow(), "x", 5, 60).unwrap();
        assert!(r.lookup(t1, "1001").is_empty());
        assert_eq!(r.count(), 0);
        // A bounded number of contacts per extension.
        let many: Vec<ContactUpdate> = (0..=MAX_CONTACTS)
            .map(|i| c(&format!("sip:p{i}@h"), 60))
            .collect();
        assert_eq!(
            r.update(t1, "1001", Some(&many), flow(), "y", 1, 60),
            Err(RegisterError::TooMany)
        );
        r.update(t1, "1001", Some(&many[..MAX_CONTACTS]), flow(), "y", 2, 60)
            .unwrap();
        assert_eq!(r.lookup(t1, "1001").len(), MAX_CONTACTS);
    }
}

/// Another edge's address, and how it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// From config: its requests may come from any port of its IP.
    Configured(std::net::SocketAddr),
    /// From its lease: its requests come from exactly there (its SIP socket), so that edges
    /// sharing a host cannot pass for each other.
    Leased(std::net::SocketAddr),
}

impl Peer {
    pub(crate) fn addr(self) -> std::net::SocketAddr {
        match self {
            Peer::Configured(a) | Peer::Leased(a) => a,
        }
    }

    /// Whether a request from `from` may come from this peer.
    pub(crate) fn sent(self, from: std::net::SocketAddr) -> bool {
        let canon = |a: std::net::SocketAddr| (a.ip().to_canonical(), a.port());
        match self {
            Peer::Configured(a) => a.ip().to_canonical() == from.ip().to_canonical(),
            Peer::Leased(a) => canon(a) == canon(from),
        }
    }
}
