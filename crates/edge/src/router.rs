//! The way in: a message from the network goes down the floors once.
//!
//! ```text
//! bytes + flow ─▶ rate limit ─▶ parse ─▶ response? ─▶ its client transaction (same flow only)
//!                                      └▶ request ─▶ server transaction (retransmission? table full?)
//!                                                  ─▶ in a dialog (To tag)? ─▶ that dialog, if over its flow
//!                                                  ─▶ method + Request-URI ─▶ one feature
//! ```
//!
//! Out-of-dialog INVITEs are routed by their Request-URI: a trunk claim (another site won the
//! call parked here), a parking slot (retrieve), a lot's park extension (attended park), or an
//! extension (a call). Everything below this file acts on what the router hands it.

use std::time::Instant;

use bytes::Bytes;
use orbit_sip::build::{salvage_response, Response};
use orbit_sip::header::Replaces;
use orbit_sip::key::ServerKey;
use orbit_sip::message::{Message, Name, ParseError};
use orbit_sip::transaction::{Kind, State};
use orbit_sip::transport::Flow;
use orbit_sip::{Method, Scheme};
use tracing::{debug, info_span, warn};

use crate::call::{is_sdp, user_of, NewCall, Target};
use crate::core::Edge;
use crate::services::{TimerKey, ALLOW};
use crate::trunk::Claim;

impl Edge {
    /// A message arrived over `flow`.
    pub fn on_message(&mut self, now: Instant, flow: Flow, bytes: Bytes) {
        self.last_now = now;
        if bytes.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return; // keep-alive
        }
        // The per-source limit comes first, so that a flood costs no parsing.
        if !self.rate.allow(now, flow.addr.ip()) {
            self.stats.rate_limited += 1;
            // One 503 per second per source at most, then silence.
            if self.rate.should_answer(now, flow.addr.ip()) {
                if let Ok(m) = orbit_sip::parse(bytes, &self.limits) {
                    if m.is_request() && *m.method() != Method::Ack {
                        let r = Response::to(&m, 503).header("Retry-After", "5");
                        self.reply_stateless(flow, r);
                    }
                }
            }
            return;
        }
        if bytes.len() > self.cfg.limits.max_message {
            // Too large to be a legitimate request here; answer 513 if we can read it.
            if let Ok(m) = orbit_sip::parse(bytes, &self.limits) {
                if m.is_request() && *m.method() != Method::Ack {
                    self.reply_stateless(flow, Response::to(&m, 513));
                }
            }
            return;
        }
        let msg = match orbit_sip::parse(bytes.clone(), &self.limits) {
            Ok(m) => m,
            Err(e) => return self.on_parse_error(flow, &bytes, e),
        };
        if msg.is_request() {
            self.on_request(now, flow, msg);
        } else {
            if let Some(d) = self.on_response(now, flow, msg) {
                self.deliver(now, d);
            }
        }
        self.settle(now);
    }

    /// A stream that could not be framed: answer 400 if a request can be read from it.
    pub fn on_bad_stream(&mut self, flow: Flow, bytes: &[u8]) {
        self.stats.parse_errors += 1;
        if let Some(r) = salvage_response(bytes, flow.addr, 400, "bad framing") {
            self.send(flow, r);
        }
    }

    fn on_parse_error(&mut self, flow: Flow, bytes: &[u8], err: ParseError) {
        self.stats.parse_errors += 1;
        debug!(%err, from = %flow.addr, "unparseable message");
        // Answer only requests, and only when we can build a response (RFC 4475: invalid
        // requests get 400, responses we cannot read are dropped).
        if bytes.starts_with(b"SIP/") {
            return;
        }
        let code = if err == ParseError::Version { 505 } else { 400 };
        if let Some(r) = salvage_response(bytes, flow.addr, code, &err.to_string()) {
            self.send(flow, r);
        }
    }

    fn on_request(&mut self, now: Instant, flow: Flow, msg: Message) {
        let key = ServerKey::of(&msg, flow.addr);
        let method = msg.method().clone();
        let m = crate::services::METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(crate::services::METHODS.len());
        if method == Method::Ack {
            self.stats.requests[m] += 1;
            if let Some(e) = self.stx.get_mut(&key) {
                if e.tx.kind == Kind::Invite && e.tx.state == State::Completed {
                    e.tx.on_ack(now);
                    if let Some(t) = e.tx.poll_timeout() {
                        self.timers.schedule(t, TimerKey::Server(key));
                    }
                    return;
                }
            }
            // ACK for a 2xx: end-to-end, belongs to the dialog.
            return self.dialog_request(now, flow, msg, None);
        }
        if let Some(e) = self.stx.get(&key) {
            // A retransmission: resend what we last answered.
            if let Some(r) = e.tx.on_retransmission() {
                let f = e.flow;
                self.send(f, r);
            }
            self.stats.retransmissions += 1;
            return;
        }
        self.stats.requests[m] += 1;
        let size = msg.head_text().len() + msg.body.len();
        if !self.open_server(&key, method == Method::Invite, flow, size) {
            return self.stateless(now, flow, &msg);
        }
        let span = info_span!("sip.request", method = %method, call_id = %msg.call_id(), from = %flow.addr);
        let _g = span.enter();

        if let Some(uri) = msg.uri() {
            if uri.scheme == Scheme::Other {
                return self.reply(now, &key, Response::to(&msg, 416));
            }
        }
        if method == Method::Cancel {
            return self.on_cancel(now, &key, flow, msg);
        }
        if let Some(unsupported) = msg
            .headers(Name::Require)
            .chain(msg.headers(Name::ProxyRequire))
            .next()
            .map(str::to_string)
        {
            if method != Method::Bye {
                let r = Response::to(&msg, 420).header("Unsupported", &unsupported);
                return self.reply(now, &key, r);
            }
        }
        if msg.to_tag().is_some() {
            return self.dialog_request(now, flow, msg, Some(key));
        }
        if self.draining.is_some() && crate::draining::refused(&msg) {
            let r = Response::to(&msg, 503).header("Retry-After", crate::draining::RETRY_AFTER);
            return self.reply(now, &key, r);
        }
        match method {
            Method::Register => self.on_register(now, &key, flow, msg),
            Method::Options => self.reply(now, &key, options_ok(&msg)),
            Method::Invite => self.on_invite(now, &key, flow, msg),
            Method::Subscribe => {
                if self.authenticate(now, &key, flow, &msg).is_some() {
                    crate::blf::on_subscribe(&mut self.lamping(), now, &key, flow, msg)
                }
            }
            Method::Message => self.on_trunk_message(now, &key, flow, msg),
            Method::Bye | Method::Prack | Method::Update | Method::Info => {
                self.reply(now, &key, Response::to(&msg, 481))
            }
            Method::Other(_) => {
                self.reply(now, &key, Response::to(&msg, 501).header("Allow", ALLOW))
            }
            _ => self.reply(now, &key, Response::to(&msg, 405).header("Allow", ALLOW)),
        }
    }

    /// A MESSAGE outside a dialog: only another edge's, signed, offering a parked call it
    /// moves (`park/moving.rs`) or giving back one it claimed (`park/give_back.rs`); a
    /// phone's gets 405 as before.
    fn on_trunk_message(&mut self, now: Instant, key: &ServerKey, flow: Flow, msg: Message) {
        let verdict = crate::trunk::verify(
            &self.picking.parking.b2bua.sv,
            &mut self.replays,
            &flow,
            &msg,
        );
        match (verdict, crate::trunk::claim_of(&msg)) {
            (Ok(Some(from)), Some(Claim::Park(park, _))) => {
                let _span = crate::trunk::span(&msg, &from).entered();
                let parking = &mut self.picking.parking;
                if msg.content_type() == Some(crate::park::GIVE_BACK_TYPE) {
                    crate::park::on_give_back(parking, now, key, msg, &from, park)
                } else {
                    crate::park::on_move_offer(parking, now, key, msg, &from, park)
                }
            }
            (Ok(Some(_)), _) => self.reply(now, key, Response::to(&msg, 400)),
            (Ok(None), _) => self.reply(now, key, Response::to(&msg, 405).header("Allow", ALLOW)),
            (Err(why), _) if self.is_trunk_peer(&flow) => {
                warn!(from = %flow.addr, %why, "trunk request refused");
                self.reply(now, key, Response::to(&msg, 403).reason(why))
            }
            (Err(_), _) => self.reply(now, key, Response::to(&msg, 403)),
        }
    }

    /// The server transaction table is full (a flood, likely from spoofed sources): answer
    /// what can be answered without remembering anything, so that a phone's OPTIONS keepalive
    /// and its first, credential-less REGISTER or INVITE still get their answer (a challenge
    /// costs us nothing: nonces are self-validating); the rest is told to come back.
    fn stateless(&mut self, now: Instant, flow: Flow, msg: &Message) {
        self.stats.stateless += 1;
        let challenge = match msg.method() {
            Method::Register if msg.header(Name::Authorization).is_none() => Some(401),
            Method::Invite | Method::Subscribe
                if msg.header(Name::ProxyAuthorization).is_none()
                    && msg.to_tag().is_none()
                    && !self.is_trusted(flow.addr.ip()) =>
            {
                Some(407)
            }
            _ => None,
        };
        match (msg.method(), challenge) {
            (Method::Options, _) if self.draining.is_none() => {
                self.reply_stateless(flow, options_ok(msg))
            }
            (_, Some(code)) => {
                let name = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let challenges = self.auth.challenges(now, false, flow.addr.ip());
                self.reply_stateless(flow, Response::to(msg, code).headers(name, &challenges));
            }
            _ => self.reply_stateless(flow, Response::to(msg, 503).header("Retry-After", "5")),
        }
    }

    /// A request naming a dialog by its To tag. It acts only on a dialog of its own flow.
    fn dialog_request(&mut self, now: Instant, flow: Flow, msg: Message, key: Option<ServerKey>) {
        if *msg.method() == Method::Subscribe {
            if let Some(k) = &key {
                if crate::blf::on_dialog_subscribe(&mut self.lamping(), now, k, flow, &msg) {
                    return;
                }
            }
        }
        let dk = (
            msg.call_id().to_string(),
            msg.to_tag().unwrap_or("").to_string(),
        );
        match self.dialogs.get(&dk).copied() {
            Some(call) => self.in_dialog(now, call, flow, msg, key),
            None => {
                if let Some(key) = key {
                    self.reply(now, &key, Response::to(&msg, 481));
                }
            }
        }
    }

    /// A request in a dialog of call `id`: checked by the call ([`crate::call::accept`]), then
    /// handed to the feature that owns its method.
    fn in_dialog(
        &mut self,
        now: Instant,
        id: u64,
        flow: Flow,
        msg: Message,
        key: Option<ServerKey>,
    ) {
        let span = match self.calls.get(&id) {
            Some(c) => c.span.clone(),
            None => tracing::Span::none(),
        };
        let _g = span.enter();
        let Some((side, key)) = crate::call::accept(self, now, id, flow, &msg, key) else {
            return;
        };
        match msg.method() {
            Method::Bye => crate::call::on_bye(self, now, id, side, key, msg),
            Method::Refer => crate::park::on_refer(self, now, id, side, key, msg),
            method => {
                if *method == Method::Info {
                    if let Some(digit) = crate::park::info_digit(&msg) {
                        crate::park::on_digit(self, now, id, side, digit);
                    }
                }
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.vacant().is_some() || self.park.held.contains_key(&id))
                {
                    // Parked: nobody on the other side to relay to. Re-INVITEs get the relay's
                    // SDP back (the music keeps flowing to the same address); the rest is
                    // accepted.
                    crate::park::parked_request(self, now, id, side, key, msg)
                } else {
                    crate::call::relay_request(self, now, id, side, key, msg)
                }
            }
        }
    }

    fn on_cancel(&mut self, now: Instant, key: &ServerKey, flow: Flow, msg: Message) {
        // The CANCEL matches the INVITE server transaction with the same branch (§9.2).
        let invite_key = key.cancelled_invite();
        if !self.stx.contains_key(&invite_key) {
            return self.reply(now, key, Response::to(&msg, 481));
        }
        self.reply(now, key, Response::to(&msg, 200));
        if let Some(cancelled) = self.park.claiming.get_mut(&invite_key) {
            // Its claim is being ordered: the 487 goes with the outcome (which, if the claim
            // was won, puts the call back in its slot).
            *cancelled = true;
            return;
        }
        if crate::park::cancel_waiting(self, now, &invite_key)
            || crate::pickup::cancel_picking(self, &invite_key)
            || crate::pickup::cancel_waiting_pick(self, now, &invite_key)
        {
            return;
        }
        // Another site's edge says why it cancels (its caller was picked up there): the phones
        // here are told too. A phone's Reason is not passed on.
        let reason = self
            .is_trunk_peer(&flow)
            .then(|| msg.header_other("Reason").map(str::to_string))
            .flatten();
        crate::call::on_cancel(self, now, &invite_key, reason);
    }

    /// An INVITE outside a dialog: checked, authenticated, then routed by its Request-URI.
    fn on_invite(&mut self, now: Instant, key: &ServerKey, flow: Flow, msg: Message) {
        if self.shutting_down {
            return self.reply(
                now,
                key,
                Response::to(&msg, 503).header("Retry-After", "30"),
            );
        }
        let mf = msg.max_forwards().unwrap_or(70);
        if mf == 0 {
            return self.reply(now, key, Response::to(&msg, 483));
        }
        // We anchor media, so we must understand the session description.
        if !msg.body.is_empty() && !is_sdp(&msg) {
            let r = Response::to(&msg, 415).header("Accept", "application/sdp");
            return self.reply(now, key, r);
        }
        // One of our own outgoing legs coming back to us: a routing loop.
        let own = (
            msg.call_id().to_string(),
            msg.from_tag().unwrap_or("").to_string(),
        );
        if self.dialogs.contains_key(&own) {
            return self.reply(now, key, Response::to(&msg, 482));
        }
        let uri = msg.uri().cloned().expect("request");
        if !self.is_our_host(uri.host()) {
            return self.reply(now, key, Response::to(&msg, 404));
        }
        let Some(from) = msg.from() else {
            return self.reply(now, key, Response::to(&msg, 400));
        };
        let from_display = from.display.map(str::to_string);
        let from_user = user_of(from.uri).unwrap_or_default();
        // Another site's edge: its signature stands for the caller's authentication there.
        let verdict = crate::trunk::verify(
            &self.picking.parking.b2bua.sv,
            &mut self.replays,
            &flow,
            &msg,
        );
        let trunk_from = match verdict {
            Ok(peer) => peer,
            // The reason is for the other sites' operators; a stranger learns nothing from
            // it (which sites exist, which check failed) and its attempts are not logged as
            // warnings, which a flood of them would drown the log in.
            Err(why) if self.is_trunk_peer(&flow) => {
                warn!(from = %flow.addr, %why, "trunk request refused");
                return self.reply(now, key, Response::to(&msg, 403).reason(why));
            }
            Err(why) => {
                debug!(from = %flow.addr, %why, "trunk request from outside the trunk refused");
                return self.reply(now, key, Response::to(&msg, 403));
            }
        };
        let _span = trunk_from
            .as_deref()
            .map(|from| crate::trunk::span(&msg, from).entered());
        let caller = if trunk_from.is_some() {
            // Claims name their claimant `edge/user`: a user with a `/` of its own could pass
            // for another edge's (an edge's own users are extensions, digits only).
            if from_user.is_empty() || from_user.contains('/') {
                return self.reply(now, key, Response::to(&msg, 403).reason("Bad Trunk Caller"));
            }
            from_user
        } else {
            match self.authenticate(now, key, flow, &msg) {
                Some(user) => user,
                None => return,
            }
        };
        let Some(callee) = uri.user().map(str::to_string) else {
            return self.reply(now, key, Response::to(&msg, 404));
        };
        // An INVITE with Replaces (RFC 3891) may name only a dialog of its sender's own user:
        // naming someone else's would take over that call. A lamp key retrieving a parked
        // call names the parked caller's dialog: that INVITE is a retrieve, decided by its
        // claim (the Replaces is not acted on).
        let replaces = msg
            .header(Name::Replaces)
            .and_then(Replaces::parse)
            .filter(|_| self.slot_number(&callee).is_none());
        if let Some(r) = replaces.as_ref().filter(|_| trunk_from.is_none()) {
            // A lamp key picking up a ringing call names that call's dialog.
            if crate::pickup::on_replaces(self, now, key, flow, &msg, &caller, r) {
                return;
            }
        }
        if let Some(r) = replaces {
            if let Some((cid, side)) = self.dialog_named(&r) {
                let owner = &self.calls[&cid].dialog_ref(side).user;
                if trunk_from.is_none() && *owner != caller {
                    warn!(%caller, %owner, call_id = %r.call_id, "INVITE with Replaces names another user's dialog: refused");
                    return self.reply(now, key, Response::to(&msg, 403).reason("Not Your Call"));
                }
            }
        }
        match (crate::trunk::claim_of(&msg), trunk_from.clone()) {
            (Some(Claim::Park(park, at)), Some(site)) => {
                let c = crate::park::TrunkClaim {
                    key: key.clone(),
                    flow,
                    msg,
                    caller,
                    site,
                    park,
                    at,
                    since: now,
                };
                return crate::park::on_claim(self, now, c);
            }
            (Some(Claim::Ring(ring, at)), Some(site)) => {
                let c = crate::pickup::TrunkPick {
                    key: key.clone(),
                    flow,
                    msg,
                    picker: caller,
                    site,
                    ring,
                    at,
                    since: now,
                };
                return crate::pickup::on_trunk_pick(self, now, c);
            }
            _ => {}
        }
        if trunk_from.is_none() {
            if let Some(dial) = self.cfg.tenant.features.pickup_dialled(&callee) {
                return crate::pickup::on_pickup_dial(self, now, key, flow, msg, caller, dial);
            }
        }
        if let Some(slot) = self.slot_number(&callee) {
            return crate::park::on_retrieve(self, now, key, flow, msg, caller, slot);
        }
        if let Some(lot) = self.lot_named(&callee).map(|l| l.key()) {
            return crate::park::on_park_call(self, now, key, flow, msg, caller, lot);
        }
        if self.extension(&callee).is_none() {
            return self.reply(now, key, Response::to(&msg, 404));
        }
        let bindings = self.registrar.lookup(now, &callee);
        let targets: Vec<Target> = if !bindings.is_empty() {
            bindings.iter().map(Target::phone).collect()
        } else if trunk_from.is_none() {
            // Registered at another site: over the trunk (never forwarded on from a trunk).
            crate::trunk::targets_for(self, now, &callee, &callee)
        } else {
            vec![]
        };
        if targets.is_empty() {
            return self.reply(now, key, Response::to(&msg, 480));
        }
        let from_phone = trunk_from.is_none();
        let call = NewCall {
            caller: caller.clone(),
            callee: callee.clone(),
            display: from_display,
            max_forwards: mf,
        };
        if let Some(id) = self.start_call(now, key, flow, msg, call, targets) {
            // The caller is here: so is the ring others may pick up (never a trunk leg's).
            if from_phone {
                crate::pickup::on_call_begun(self, now, id, &caller, &callee);
            }
        }
    }
}

/// What we answer OPTIONS with (also without a transaction).
fn options_ok(msg: &Message) -> Response<'_> {
    Response::to(msg, 200)
        .header("Allow", ALLOW)
        .header("Accept", "application/sdp")
        .header("Supported", "replaces")
}
