//! The registrar (RFC 3261 §10.3): a REGISTER, authenticated as the extension it registers,
//! updates that extension's bindings in the location service ([`crate::location`]) and, across
//! sites, reports where the extension is to the registry.

use std::time::Instant;

use orbit_sip::build::Response;
use orbit_sip::header::{delta_seconds, NameAddr};
use orbit_sip::key::ServerKey;
use orbit_sip::message::{Message, Name};
use orbit_sip::transport::Flow;
use tracing::{debug, info};

use crate::location::{ContactUpdate, RegisterError};
use crate::services::Services;

impl Services {
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
        // Phones of this extension before: a refresh that changes nothing is not news.
        let before = self.registrar.lookup(now, &aor).len();
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
                if bindings.len() != before {
                    info!(ext = %aor, contacts = bindings.len(), "registered");
                } else {
                    debug!(ext = %aor, contacts = bindings.len(), "registration refreshed");
                }
                self.reply(now, key, Response::to(&msg, 200).pairs(&extra))
            }
        }
    }
}
