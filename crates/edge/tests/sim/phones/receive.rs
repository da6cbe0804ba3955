//! What the phones do with what they get: requests (calls, recalls, BYE, CANCEL, lamps'
//! NOTIFYs, greetings) and responses (to REGISTER, INVITE, REFER, SUBSCRIBE).

use super::*;

impl Phone {
    // ------------------------------------------------------------ messages

    pub(crate) fn on_message(&mut self, cx: &mut Cx, m: Message) {
        debug(|| {
            format!(
                "{} got {}",
                self.ext,
                m.head_text().lines().next().unwrap_or("")
            )
        });
        if m.is_request() {
            self.on_request(cx, m)
        } else {
            self.on_response(cx, m)
        }
    }

    pub(crate) fn on_request(&mut self, cx: &mut Cx, m: Message) {
        let cid = m.call_id().to_string();
        let key = (cid.clone(), m.cseq.seq, m.method().as_str().to_string());
        if let Some(b) = self.sent.get(&key) {
            let b = b.clone();
            return self.send(cx, b);
        }
        match m.method() {
            Method::Invite if m.to_tag().is_none() => self.on_invite(cx, m),
            Method::Invite => {
                if self.dialogs.get(&cid).is_some_and(|d| d.state == St::Up) {
                    let body = sdp(self.addr);
                    self.respond(cx, &m, 200, None, Some(&body));
                } else {
                    self.respond(cx, &m, 481, None, None);
                }
            }
            Method::Ack => {
                let Some(d) = self.dialogs.get(&cid) else {
                    return;
                };
                if d.state != St::Up
                    || self
                        .sent
                        .contains_key(&(cid.clone(), m.cseq.seq, "ACK".into()))
                {
                    return;
                }
                // The first ACK of our 200: note it so that a repeat does nothing.
                self.sent
                    .insert((cid.clone(), m.cseq.seq, "ACK".into()), Bytes::new());
                match d.kind {
                    Kind::In => {
                        let ms = cx.rng.gen_range(300..=1_500);
                        self.at(cx, ms, Act::Refer(cid));
                    }
                    Kind::Recall => self.at(cx, 50, Act::Hello(cid)),
                    _ => {}
                }
            }
            Method::Bye => {
                let known = self.dialogs.get(&cid).is_some_and(|d| d.state == St::Up);
                self.respond(cx, &m, if known { 200 } else { 481 }, None, None);
                self.over(cx, &cid);
            }
            Method::Cancel => {
                self.respond(cx, &m, 200, None, None);
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                if let Some(inv) = d.invite.take() {
                    let tag = d.local_tag();
                    self.respond(cx, &inv, 487, Some(&tag), None);
                    self.over(cx, &cid);
                }
            }
            Method::Notify => {
                self.respond(cx, &m, 200, None, None);
                let body = String::from_utf8_lossy(&m.body).to_string();
                let event = m.header(Name::Event).unwrap_or("");
                if event.starts_with("dialog") && self.ext_subs.contains_key(&cid) {
                    self.on_ext_lamp(cx, &cid, &body);
                } else if event.starts_with("dialog") {
                    self.on_lamp(cx, &cid, &body);
                } else if event.starts_with("refer") {
                    if body.starts_with("SIP/2.0 200") {
                        cx.obs.parked += 1;
                    } else if body.starts_with("SIP/2.0 ") && !body.starts_with("SIP/2.0 1") {
                        // The park failed: the call stays with us; give it up.
                        cx.obs.park_failed += 1;
                        debug(|| format!("{} park failed: {body:?}", self.ext));
                        self.at(cx, 300, Act::Bye(cid));
                    }
                }
            }
            Method::Info => {
                self.respond(cx, &m, 200, None, None);
                let body = String::from_utf8_lossy(&m.body).to_string();
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                if let Some(who) = body.strip_prefix("hello ") {
                    let (who, what) = who.split_once(' ').unwrap_or((who, ""));
                    d.greeted = Some(who.to_string());
                    cx.obs.heard.push((d.label.clone(), who.to_string()));
                    if let Some(i) = what.strip_prefix('r').and_then(|i| i.parse::<usize>().ok()) {
                        cx.obs.retrieves[i].heard_by = Some(d.label.clone());
                    }
                    if let Some(i) = what.strip_prefix('p').and_then(|i| i.parse::<usize>().ok()) {
                        cx.obs.pickups[i].heard_by = Some(d.label.clone());
                    }
                    let me = format!("caller {}", d.label);
                    self.in_dialog(cx, &cid, "INFO", "", Some(("text/plain", &me)));
                } else if let Some(label) = body.strip_prefix("caller ") {
                    d.reached = d.label == label;
                    if let Kind::Retrieve(i) = d.kind {
                        cx.obs.retrieves[i].reached = Some(label.to_string());
                    } else if let Kind::Pickup(i) = d.kind {
                        cx.obs.pickups[i].reached = Some(label.to_string());
                    } else if d.label != label {
                        panic!("{} reached {label} on a recall of {}", self.ext, d.label);
                    }
                }
            }
            _ => self.respond(cx, &m, 200, None, None),
        }
    }

    pub(crate) fn on_invite(&mut self, cx: &mut Cx, m: Message) {
        let cid = m.call_id().to_string();
        let from = m.header(Name::From).unwrap_or("").to_string();
        let tag = self.id("t");
        if self.role != Role::Receptionist || self.dialogs.contains_key(&cid) {
            return self.respond(cx, &m, 486, Some(&tag), None);
        }
        let display = display_of(&from);
        let (kind, label) = match display.strip_prefix("Recall ") {
            Some(rest) => {
                let (slot, label) = rest.split_once(": ").expect("\"Recall <slot>: <label>\"");
                cx.obs.recalls.push(RecallSeen {
                    ext: self.ext.clone(),
                    call_id: cid.clone(),
                    slot: slot.parse().expect("a slot"),
                    label: label.to_string(),
                    at: cx.ms,
                });
                (Kind::Recall, label.to_string())
            }
            None => (Kind::In, display),
        };
        let to = m.header(Name::To).unwrap_or("");
        let d = Dlg {
            kind: kind.clone(),
            state: St::Early,
            local: format!("{to};tag={tag}"),
            remote: from,
            target: m.header(Name::Contact).map(uri_of).unwrap_or_default(),
            ruri: String::new(),
            branch: String::new(),
            invite_cseq: m.cseq.seq,
            cseq: 0,
            invite: Some(m.clone()),
            label,
            cancelled: false,
            greeted: None,
            reached: false,
        };
        self.dialogs.insert(cid.clone(), d);
        self.respond(cx, &m, 180, Some(&tag), None);
        if kind == Kind::In {
            // Mostly at once; a quarter of the calls ring a while, for colleagues to pick up.
            let ms = if cx.rng.gen_ratio(1, 4) {
                cx.rng.gen_range(1_200..=3_000)
            } else {
                cx.rng.gen_range(200..=800)
            };
            return self.at(cx, ms, Act::Answer(cid));
        }
        // A recall: answered (sometimes after the ring time), left ringing, or refused.
        match cx.rng.gen_range(0..20) {
            0..=12 => {
                let ms = cx.rng.gen_range(300..=3_500);
                self.at(cx, ms, Act::Answer(cid));
            }
            13..=16 => {}
            _ => self.at(cx, 200, Act::Reject(cid)),
        }
    }

    pub(crate) fn on_lamp(&mut self, cx: &mut Cx, cid: &str, body: &str) {
        let Some(&slot) = self.subs.get(cid) else {
            return;
        };
        let Some(version) = body
            .split("dialog-info\" version=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let park = body
            .split("id=\"park-")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<ParkId>().ok());
        // Older documents (out of order) are ignored, as RFC 4235 says.
        if self.lamps.get(&slot).is_some_and(|l| l.0 >= version) {
            return;
        }
        debug(|| format!("{} lamp {slot} v{version} {park:?}", self.ext));
        self.lamps.insert(slot, (version, park));
        let Some(p) = park else { return };
        if !self.seen.insert(p) || !cx.traffic || !wanted(p) || !cx.rng.gen_ratio(2, 5) {
            return;
        }
        // Mostly at once (everyone who saw the lamp light up: fights), or a bit later, or
        // late (a race with the recall).
        let ms = match cx.rng.gen_range(0..20) {
            0..=9 => cx.rng.gen_range(100..=250),
            10..=16 => cx.rng.gen_range(250..=2_000),
            _ => cx.rng.gen_range(5_500..=8_000),
        };
        self.at(cx, ms, Act::Retrieve(slot));
    }

    /// A receptionist's lamp: a call ringing it (an early dialog) may be picked up.
    pub(crate) fn on_ext_lamp(&mut self, cx: &mut Cx, cid: &str, body: &str) {
        let Some(ext) = self.ext_subs.get(cid).cloned() else {
            return;
        };
        if !body.contains("<state>early</state>") || !cx.traffic || self.busy {
            return;
        }
        debug(|| format!("{} sees {ext} ringing", self.ext));
        if cx.rng.gen_ratio(1, 5) {
            // At once (racing the others who saw it, and the receptionist) or a bit later.
            let ms = cx.rng.gen_range(20..=600);
            self.at(cx, ms, Act::Pickup(ext));
        }
    }

    pub(crate) fn on_response(&mut self, cx: &mut Cx, m: Message) {
        let cid = m.call_id().to_string();
        let code = m.code();
        match m.cseq.method {
            Method::Register => {
                if code == 401 {
                    let ch = m.header(Name::WwwAuthenticate).unwrap_or("").to_string();
                    self.register(cx, Some(&ch));
                } else {
                    assert_eq!(code, 200, "{} could not register", self.ext);
                }
            }
            Method::Invite => self.on_invite_response(cx, &cid, m),
            Method::Refer if code >= 300 => {
                debug(|| format!("{} REFER refused: {code}", self.ext));
                cx.obs.park_failed += 1;
                self.at(cx, 300, Act::Bye(cid));
            }
            Method::Subscribe => assert!(code < 300, "lamp subscription refused: {code}"),
            _ => {}
        }
    }

    pub(crate) fn on_invite_response(&mut self, cx: &mut Cx, cid: &str, m: Message) {
        let code = m.code();
        let Some(d) = self.dialogs.get_mut(cid) else {
            return;
        };
        let to = m.header(Name::To).unwrap_or("").to_string();
        if code < 200 {
            if code > 100 && d.state == St::Calling {
                d.state = St::Early;
                d.remote = to;
            }
            return;
        }
        if code >= 300 {
            // ACK the failure (same branch), then the dialog is over.
            let (ruri, branch, local, cseq) = (
                d.ruri.clone(),
                d.branch.clone(),
                d.local.clone(),
                d.invite_cseq,
            );
            match d.kind {
                Kind::Retrieve(i) => {
                    cx.obs.retrieves[i].done.get_or_insert((code, cx.ms));
                }
                Kind::Pickup(i) => {
                    cx.obs.pickups[i].done.get_or_insert((code, cx.ms));
                }
                _ => {}
            }
            let b = self.request("ACK", &ruri, &branch, &local, &to, cid, cseq, "", None);
            self.send(cx, b);
            return self.over(cx, cid);
        }
        let first = matches!(d.state, St::Calling | St::Early);
        if first {
            d.state = St::Up;
            d.remote = to.clone();
            d.target = m.header(Name::Contact).map(uri_of).unwrap_or_default();
        }
        // Every 2xx (and its retransmissions) is ACKed.
        let (target, local, cseq) = (d.target.clone(), d.local.clone(), d.invite_cseq);
        let branch = self.id("b");
        let b = self.request("ACK", &target, &branch, &local, &to, cid, cseq, "", None);
        self.send(cx, b);
        if !first {
            return;
        }
        let d = self.dialogs.get_mut(cid).expect("present");
        match d.kind.clone() {
            Kind::Out => {
                // Mostly long enough to be parked and retrieved or recalled; now and then the
                // caller gives up while parked.
                let ms = if cx.rng.gen_ratio(1, 4) {
                    cx.rng.gen_range(2_000..=8_000)
                } else {
                    cx.rng.gen_range(12_000..=30_000)
                };
                self.at(cx, ms, Act::HangUp(cid.to_string()));
            }
            Kind::Retrieve(i) => {
                // `"701: <label>" <sip:...>`, from the edge holding the call (this phone's, or
                // another site's passed on by this phone's edge).
                let pai = m.header_other("P-Asserted-Identity").unwrap_or("");
                let display = display_of(pai);
                let named = display.split_once(": ").and_then(|(slot, label)| {
                    let user = orbit_sip::Uri::parse(&uri_of(pai))
                        .ok()?
                        .user()?
                        .to_string();
                    Some((slot.parse::<u32>().ok()?, label.to_string(), user))
                });
                debug(|| format!("{} got {pai:?}", self.ext));
                d.label = named.as_ref().map(|n| n.1.clone()).unwrap_or_default();
                let cancelled = d.cancelled;
                let r = &mut cx.obs.retrieves[i];
                r.done.get_or_insert((code, cx.ms));
                if let Some((slot, label, user)) = named {
                    r.label = Some(label.clone());
                    r.named = Some((slot, user));
                    cx.obs.holders.push((label, self.ext.clone(), cx.ms));
                }
                if cancelled {
                    // Answered before our CANCEL arrived: hang up at once.
                    self.at(cx, 0, Act::Bye(cid.to_string()));
                } else {
                    self.at(cx, 50, Act::Hello(cid.to_string()));
                }
            }
            Kind::Pickup(i) => {
                // `"<label>" <sip:<caller>@...>`: who called, as the edge holding it says (a
                // recall picked up: `"<slot>: <label>"`, as a retrieve is told).
                let pai = m.header_other("P-Asserted-Identity").unwrap_or("");
                let display = display_of(pai);
                let label = match display.split_once(": ") {
                    Some((slot, l)) if slot.parse::<u32>().is_ok() => l.to_string(),
                    _ => display,
                };
                let user = orbit_sip::Uri::parse(&uri_of(pai))
                    .ok()
                    .and_then(|u| u.user().map(str::to_string));
                debug(|| format!("{} picked up {pai:?}", self.ext));
                d.label = label.clone();
                let cancelled = d.cancelled;
                let p = &mut cx.obs.pickups[i];
                p.done.get_or_insert((code, cx.ms));
                if !label.is_empty() {
                    p.label = Some(label.clone());
                    p.user = user;
                    cx.obs.holders.push((label, self.ext.clone(), cx.ms));
                }
                if cancelled {
                    self.at(cx, 0, Act::Bye(cid.to_string()));
                } else {
                    self.at(cx, 50, Act::Hello(cid.to_string()));
                }
            }
            _ => {}
        }
    }
}
