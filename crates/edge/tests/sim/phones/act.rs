//! What the phones do of their own accord, when their timers come: register, subscribe to the
//! lamps, call, answer, park, retrieve, pick up, greet, hang up.

use super::*;

impl Phone {
    pub(crate) fn on_timer(&mut self, cx: &mut Cx, act: Act) {
        match act {
            Act::Register => self.register(cx, None),
            Act::Subscribe => {
                for slot in SLOTS {
                    let cid = self.subscribe(cx, &slot.to_string());
                    self.subs.insert(cid, slot);
                }
            }
            Act::Call => {
                if !cx.traffic || self.busy {
                    return;
                }
                self.busy = true;
                self.calls_made += 1;
                cx.obs.calls += 1;
                let label = format!("c{}n{}", self.ext, self.calls_made);
                // Mostly their own site's receptionist, now and then another site's (the call
                // then comes over the trunk, and is parked at the receptionist's site).
                let site = if cx.rng.gen_ratio(1, 5) {
                    (self.site + cx.rng.gen_range(1..SITES)) % SITES
                } else {
                    self.site
                };
                let to_ext = receptionist(site);
                let ruri = format!("sip:{to_ext}@{DOMAIN}");
                let tag = self.id("t");
                let local = format!("\"{label}\" <sip:{}@{DOMAIN}>;tag={tag}", self.ext);
                let d = Dlg::calling(Kind::Out, local, ruri, self.id("b"), label);
                self.invite(cx, d);
            }
            Act::Retrieve(slot) => {
                let lit = self.lamps.get(&slot).is_some_and(|l| l.1.is_some());
                if !cx.traffic || self.busy || !lit {
                    return;
                }
                self.busy = true;
                cx.obs.retrieves.push(RetrieveSeen {
                    ext: self.ext.clone(),
                    site: self.site,
                    slot,
                    sent: cx.ms,
                    done: None,
                    label: None,
                    named: None,
                    reached: None,
                    cancelled: false,
                    heard_by: None,
                });
                let kind = Kind::Retrieve(cx.obs.retrieves.len() - 1);
                self.fetch(cx, &slot.to_string(), kind);
            }
            Act::WatchDesks => {
                // The other receptionists' lamps: a call ringing one shows there.
                let me = self.site;
                for site in (0..SITES).filter(|s| *s != me) {
                    let ext = receptionist(site);
                    let cid = self.subscribe(cx, &ext);
                    self.ext_subs.insert(cid, ext);
                }
            }
            Act::Pickup(ext) => {
                if !cx.traffic || self.busy {
                    return;
                }
                self.busy = true;
                // Directed mostly; now and then a group pickup (whatever rings longest).
                let dialled = if cx.rng.gen_ratio(1, 3) {
                    "*8".to_string()
                } else {
                    format!("*8{ext}")
                };
                cx.obs.pickups.push(PickupSeen {
                    ext: self.ext.clone(),
                    site: self.site,
                    dialled: dialled.clone(),
                    sent: cx.ms,
                    done: None,
                    label: None,
                    user: None,
                    reached: None,
                    heard_by: None,
                    cancelled: false,
                });
                let kind = Kind::Pickup(cx.obs.pickups.len() - 1);
                self.fetch(cx, &dialled, kind);
            }
            Act::Answer(cid) => {
                let body = sdp(self.addr);
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                let Some(inv) = d.invite.take() else { return };
                if d.state != St::Early {
                    return;
                }
                d.state = St::Up;
                let tag = d.local_tag();
                self.respond(cx, &inv, 200, Some(&tag), Some(&body));
            }
            Act::Reject(cid) => {
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                let Some(inv) = d.invite.take() else { return };
                d.state = St::Done;
                let tag = d.local_tag();
                self.respond(cx, &inv, 486, Some(&tag), None);
            }
            Act::Refer(cid) => {
                if self.dialogs.get(&cid).is_none_or(|d| d.state != St::Up) {
                    return;
                }
                cx.obs.refers += 1;
                // Mostly the park extension; now and then a slot of the receptionist's choice
                // (which may be taken).
                let target = if cx.rng.gen_ratio(1, 10) {
                    cx.rng.gen_range(SLOTS).to_string()
                } else {
                    "700".to_string()
                };
                let extra = format!(
                    "Refer-To: <sip:{target}@{DOMAIN}>\r\nReferred-By: <sip:{}@{DOMAIN}>\r\n",
                    self.ext
                );
                self.in_dialog(cx, &cid, "REFER", &extra, None);
            }
            Act::HangUp(cid) => {
                // After the traffic nobody hangs up of their own accord: whoever is still in
                // a call stays there, for the liveness check to see where each call ended.
                if cx.traffic {
                    self.on_timer(cx, Act::Bye(cid));
                }
            }
            Act::Bye(cid) => {
                if self.dialogs.get(&cid).is_none_or(|d| d.state != St::Up) {
                    return;
                }
                self.in_dialog(cx, &cid, "BYE", "", None);
                self.over(cx, &cid);
            }
            Act::Cancel(cid) => {
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                if !matches!(d.state, St::Calling | St::Early) {
                    return;
                }
                d.cancelled = true;
                let (ruri, branch, local, cseq) = (
                    d.ruri.clone(),
                    d.branch.clone(),
                    d.local.clone(),
                    d.invite_cseq,
                );
                let to = format!("<{ruri}>");
                match d.kind {
                    Kind::Retrieve(i) => cx.obs.retrieves[i].cancelled = true,
                    Kind::Pickup(i) => cx.obs.pickups[i].cancelled = true,
                    _ => {}
                }
                let b = self.request("CANCEL", &ruri, &branch, &local, &to, &cid, cseq, "", None);
                self.send(cx, b);
            }
            Act::Hello(cid) => {
                let Some(d) = self.dialogs.get(&cid) else {
                    return;
                };
                if d.state != St::Up {
                    return;
                }
                if d.kind == Kind::Recall {
                    // The recall was answered and kept: this phone holds the caller.
                    cx.obs
                        .holders
                        .push((d.label.clone(), self.ext.clone(), cx.ms));
                    cx.obs.recalls_kept += 1;
                }
                // Names this phone and the retrieve, so that the caller's side can tell which
                // retrieve reached it.
                let what = match d.kind {
                    Kind::Retrieve(i) => format!("r{i}"),
                    Kind::Pickup(i) => format!("p{i}"),
                    _ => "recall".into(),
                };
                let hello = format!("hello {} {what}", self.ext);
                self.in_dialog(cx, &cid, "INFO", "", Some(("text/plain", &hello)));
                let ms = cx.rng.gen_range(1_000..=4_000);
                self.at(cx, ms, Act::HangUp(cid));
            }
        }
    }

    /// A lamp subscription (dialog events) to `user`; its Call-ID.
    fn subscribe(&mut self, cx: &mut Cx, user: &str) -> String {
        let cid = self.id("lamp");
        let tag = self.id("t");
        let from = format!("<sip:{}@{DOMAIN}>;tag={tag}", self.ext);
        let to = format!("<sip:{user}@{DOMAIN}>");
        let branch = self.id("b");
        let b = self.request(
            "SUBSCRIBE",
            &format!("sip:{user}@{DOMAIN}"),
            &branch,
            &from,
            &to,
            &cid,
            1,
            "Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 3600\r\n",
            None,
        );
        self.send(cx, b);
        cid
    }

    /// Dial `dialled` for a call held or ringing elsewhere (a retrieve, a pickup). Now and
    /// then the phone thinks better of it while the log orders its claim; it gives up when
    /// nothing answers for a while.
    fn fetch(&mut self, cx: &mut Cx, dialled: &str, kind: Kind) {
        let ruri = format!("sip:{dialled}@{DOMAIN}");
        let tag = self.id("t");
        let local = format!("<sip:{}@{DOMAIN}>;tag={tag}", self.ext);
        let d = Dlg::calling(kind, local, ruri, self.id("b"), String::new());
        let cid = self.invite(cx, d);
        if cx.rng.gen_ratio(1, 10) {
            let ms = cx.rng.gen_range(2..=40);
            self.at(cx, ms, Act::Cancel(cid.clone()));
        }
        self.at(cx, GIVE_UP.as_millis() as u64, Act::Cancel(cid));
    }
}
