//! Registrar bindings (RFC 3261 §10.3): extension → contacts, each with the flow it registered
//! over (requests to the contact go back over that flow: we never send to an address merely
//! named in a Contact header), its expiry and the Call-ID/CSeq that last refreshed it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use orbit_sip::build::Response;
use orbit_sip::header::{delta_seconds, NameAddr};
use orbit_sip::key::ServerKey;
use orbit_sip::message::{Message, Name};
use orbit_sip::transport::Flow;
use tracing::info;

use crate::core::Edge;

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

    pub fn count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }
}

/// Contact URIs compare as URIs; a textual compare ignoring case of scheme/host is close
/// enough for refreshes from the same phone, which resends the same text.
fn same_contact(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Edge {
    /// A REGISTER (RFC 3261 §10.3): authenticated as the extension it registers.
    pub(crate) fn on_register(&mut self, now: Instant, key: &ServerKey, flow: Flow, msg: Message) {
        let Some(to) = msg.to() else {
            return self.reply(now, key, Response::to(&msg, 400));
        };
        let Some(aor) = orbit_sip::Uri::parse(to.uri)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
        else {
            return self.reply(now, key, Response::to(&msg, 404));
        };
        // Whether an extension exists is told only to whoever authenticates: a stranger gets
        // the same challenge, then 403, for every number (no list of extensions by 404s). An
        // AOR that cannot be an extension (they are digits) is not one, whoever asks.
        if aor.is_empty() || !aor.bytes().all(|b| b.is_ascii_digit()) {
            return self.reply(now, key, Response::to(&msg, 404));
        }
        let user = match self.check_auth(now, flow.addr.ip(), &msg, Name::Authorization) {
            Ok(u) => u,
            Err((code, headers)) => {
                let extra: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|h| ("WWW-Authenticate", h.as_str()))
                    .collect();
                let code = if code == 407 { 401 } else { code };
                return self.reply(now, key, Response::to(&msg, code).pairs(&extra));
            }
        };
        if user != aor {
            return self.reply(now, key, Response::to(&msg, 403));
        }
        let default_exp = match msg.header(Name::Expires).map(delta_seconds) {
            None => 3600,
            Some(Some(e)) => e,
            Some(None) => {
                return self.reply(now, key, Response::to(&msg, 400).reason("Bad Expires"))
            }
        };
        let contacts: Vec<&str> = msg.values(Name::Contact).collect();
        let max = self.cfg.auth.max_expires;
        let min = self.cfg.auth.min_expires;
        let result = if contacts == ["*"] {
            if default_exp != 0 {
                return self.reply(now, key, Response::to(&msg, 400));
            }
            self.registrar
                .update(now, &aor, None, flow, msg.call_id(), msg.cseq.seq, min)
        } else if contacts.contains(&"*") {
            return self.reply(now, key, Response::to(&msg, 400));
        } else if contacts.is_empty() {
            Ok(())
        } else {
            let mut ups = Vec::with_capacity(contacts.len());
            for c in &contacts {
                let Some(na) = NameAddr::parse(c) else {
                    return self.reply(now, key, Response::to(&msg, 400));
                };
                let exp = match na.param("expires").map(delta_seconds) {
                    None => default_exp,
                    Some(Some(e)) => e,
                    Some(None) => {
                        let r = Response::to(&msg, 400).reason("Bad Contact Expires");
                        return self.reply(now, key, r);
                    }
                }
                .min(max);
                ups.push(ContactUpdate {
                    contact: na.uri.to_string(),
                    expires: exp,
                });
            }
            self.registrar.update(
                now,
                &aor,
                Some(&ups),
                flow,
                msg.call_id(),
                msg.cseq.seq,
                min,
            )
        };
        match result {
            Err(RegisterError::TooBrief) => {
                let m = min.to_string();
                self.reply(now, key, Response::to(&msg, 423).header("Min-Expires", &m))
            }
            Err(RegisterError::OutOfOrder) => self.reply(now, key, Response::to(&msg, 500)),
            Err(RegisterError::TooMany) => self.reply(now, key, Response::to(&msg, 403)),
            Ok(()) => {
                self.stats.registrations += 1;
                let bindings = self.registrar.lookup(now, &aor);
                let until = bindings.iter().map(|b| b.expires_at).max();
                self.report_location(now, &aor, until);
                let values: Vec<String> = bindings
                    .iter()
                    .map(|b| {
                        format!(
                            "<{}>;expires={}",
                            b.contact,
                            b.expires_at.saturating_duration_since(now).as_secs()
                        )
                    })
                    .collect();
                let extra: Vec<(&str, &str)> =
                    values.iter().map(|v| ("Contact", v.as_str())).collect();
                info!(ext = %aor, contacts = bindings.len(), "registered");
                self.reply(now, key, Response::to(&msg, 200).pairs(&extra))
            }
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
