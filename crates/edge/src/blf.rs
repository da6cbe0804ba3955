//! Busy-lamp keys: `SUBSCRIBE Event: dialog` (RFC 6665, RFC 4235) to a slot (`701`), to a lot's
//! park extension (`700`, every slot of the lot), or to an extension (`1002`: the calls ringing
//! it at any site, early, then confirmed when answered, and terminated when they end; a lamp
//! key picks a ringing one up with an INVITE whose Replaces names it). Each new subscription
//! and each refresh gets a NOTIFY with the full current state; every orbit event that touches
//! the resource sends another, with the version counting up. An extension's lamp may be
//! watched by the extension itself and by whoever may pick up its calls; while one is, the
//! edge says so in the log (`Watch`), and every edge records the calls to and from that
//! extension from their first ring (`crate::pickup`), so the lamp shows them all.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use orbit_sip::message::{Message, Name};
use orbit_sip::transport::Flow;
use orbit_state::{Event, LotKey, Parked, Ringing};
use tracing::{debug, info};

use orbit_sip::build::Response;
use orbit_sip::dialog::Dialog;
use orbit_sip::header::delta_seconds;
use orbit_sip::key::ServerKey;

use crate::services::transactions::Owner;
use crate::services::Services;

const MIN_EXPIRES: u32 = 60;
const MIN_EXPIRES_TEXT: &str = "60";
/// Lamp subscriptions held at once (each is a small dialog; input must not grow tables freely).
const MAX_SUBSCRIPTIONS: usize = 20_000;
const MAX_EXPIRES: u32 = 3600;
const CONTENT_TYPE: &str = "application/dialog-info+xml";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Slot(u32),
    Lot(LotKey),
    Ext(String),
}

struct Sub {
    resource: Resource,
    /// The resource as a user part ("701", "700").
    user: String,
    dialog: Dialog,
    version: u32,
    expires_at: Instant,
}

type SubKey = (String, String);

/// The lamp subscriptions, by (Call-ID, our tag).
#[derive(Default)]
pub(crate) struct Lamps {
    subs: HashMap<SubKey, Sub>,
    /// Extension → the subscriptions to its lamp (a ring event finds them without a scan).
    by_ext: HashMap<String, HashSet<SubKey>>,
}

impl Lamps {
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    fn insert(&mut self, k: SubKey, sub: Sub) {
        if let Resource::Ext(e) = &sub.resource {
            self.by_ext.entry(e.clone()).or_default().insert(k.clone());
        }
        self.subs.insert(k, sub);
    }

    fn remove(&mut self, k: &SubKey) -> Option<Sub> {
        let sub = self.subs.remove(k)?;
        if let Resource::Ext(e) = &sub.resource {
            if let Some(set) = self.by_ext.get_mut(e) {
                set.remove(k);
                if set.is_empty() {
                    self.by_ext.remove(e);
                }
            }
        }
        Some(sub)
    }
}

/// The lamps' view of the edge: their subscriptions over the services (to which it derefs).
pub(crate) struct Lamping<'a> {
    pub sv: &'a mut Services,
    pub blf: &'a mut Lamps,
}

impl std::ops::Deref for Lamping<'_> {
    type Target = Services;
    fn deref(&self) -> &Services {
        self.sv
    }
}

impl std::ops::DerefMut for Lamping<'_> {
    fn deref_mut(&mut self) -> &mut Services {
        self.sv
    }
}

/// An out-of-dialog SUBSCRIBE (a new subscription), already authenticated.
pub(crate) fn on_subscribe(
    edge: &mut Lamping<'_>,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
) {
    let event = msg.header(Name::Event).unwrap_or("");
    let package = event.split(';').next().unwrap_or("").trim();
    if !package.eq_ignore_ascii_case("dialog") {
        return edge.reply(
            now,
            key,
            Response::to(&msg, 489).header("Allow-Events", "dialog"),
        );
    }
    if let Some(accept) = msg.header_other("Accept") {
        if !accept.to_ascii_lowercase().contains(CONTENT_TYPE) && !accept.contains("*/*") {
            return edge.reply(
                now,
                key,
                Response::to(&msg, 406).header("Accept", CONTENT_TYPE),
            );
        }
    }
    let user = msg
        .uri()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default();
    let resource = if let Some(s) = edge.slot_number(&user) {
        Resource::Slot(s)
    } else if let Some(l) = edge.lot_named(&user) {
        Resource::Lot(l.key())
    } else if edge.extension(&user).is_some() {
        Resource::Ext(user.clone())
    } else {
        return edge.reply(now, key, Response::to(&msg, 404));
    };
    let expires = match requested_expires(&msg) {
        Ok(e) => e,
        Err(code) => return edge.reply(now, key, bad_expires(&msg, code)),
    };
    if edge.blf.subs.len() >= MAX_SUBSCRIPTIONS {
        return edge.reply(
            now,
            key,
            Response::to(&msg, 503).header("Retry-After", "60"),
        );
    }
    let subscriber = msg
        .from()
        .and_then(|f| orbit_sip::Uri::parse(f.uri).ok())
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default();
    if let Resource::Ext(ext) = &resource {
        // Its lamp shows who calls it and names the call for a pickup: for the extension
        // itself and those who may pick its calls up.
        if *ext != subscriber && !edge.pickup_rules.may_take(&subscriber, ext) {
            info!(%subscriber, %ext, "extension lamp outside the subscriber's pickup groups");
            let r = Response::to(&msg, 403).reason("Not In Your Pickup Group");
            return edge.reply(now, key, r);
        }
    }
    let held = edge
        .blf
        .subs
        .values()
        .filter(|s| s.dialog.user == subscriber)
        .count();
    if expires > 0 && held >= edge.cfg.limits.lamps_per_user {
        info!(%subscriber, held, "too many lamp subscriptions for one user");
        let r = Response::to(&msg, 403).reason("Too Many Lamps");
        return edge.reply(now, key, r);
    }
    let tag = edge.ids.tag();
    let dialog = Dialog::uas(&msg, flow, &tag, &user, &subscriber);
    let k = (dialog.call_id.clone(), tag.clone());
    respond(edge, now, key, &msg, &tag, &user, flow, expires);
    let sub = Sub {
        resource,
        user,
        dialog,
        version: 0,
        expires_at: now + Duration::from_secs(expires as u64),
    };
    info!(resource = %sub.user, %subscriber, expires, "lamp subscribed");
    if expires == 0 {
        // A fetch: one NOTIFY with the state, and the subscription is over.
        edge.blf.insert(k.clone(), sub);
        notify(edge, now, &k, Some("terminated;reason=timeout"), &[]);
        edge.blf.remove(&k);
        return;
    }
    let ext = match &sub.resource {
        Resource::Ext(e) => Some(e.clone()),
        _ => None,
    };
    edge.blf.insert(k.clone(), sub);
    notify(edge, now, &k, None, &[]);
    if let Some(ext) = ext {
        report_watch(edge, now, &ext);
    }
}

/// Tell every edge whether a lamp here still watches extension `ext`, and until when: they
/// record its calls from the first ring while one does.
fn report_watch(edge: &mut Lamping<'_>, now: Instant, ext: &str) {
    let until = edge
        .blf
        .by_ext
        .get(ext)
        .into_iter()
        .flatten()
        .filter_map(|k| edge.blf.subs.get(k))
        .map(|s| s.expires_at)
        .max();
    edge.sv.report_watch(now, ext, until);
}

/// Subscription `k` is over: gone from the tables, and from the watch of its extension.
fn forget(edge: &mut Lamping<'_>, now: Instant, k: &SubKey) -> bool {
    let Some(sub) = edge.blf.remove(k) else {
        return false;
    };
    if let Resource::Ext(e) = &sub.resource {
        report_watch(edge, now, e);
    }
    true
}

/// A SUBSCRIBE inside a lamp dialog: refresh, or un-subscribe with `Expires: 0`.
/// Returns false when the dialog is not a lamp subscription.
pub(crate) fn on_dialog_subscribe(
    edge: &mut Lamping<'_>,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: &Message,
) -> bool {
    let k = (
        msg.call_id().to_string(),
        msg.to_tag().unwrap_or("").to_string(),
    );
    let Some(sub) = edge.blf.subs.get_mut(&k) else {
        return false;
    };
    if !sub.dialog.accepts(&flow) {
        // Someone who learnt the subscription's identifiers, from elsewhere.
        edge.stats.foreign_in_dialog += 1;
        debug!(from = %flow.addr, "lamp SUBSCRIBE from outside its dialog's flow");
        edge.reply(now, key, Response::to(msg, 481));
        return true;
    }
    if msg.cseq.seq <= sub.dialog.remote_cseq {
        edge.reply(now, key, Response::to(msg, 500).header("Retry-After", "1"));
        return true;
    }
    sub.dialog.remote_cseq = msg.cseq.seq;
    let expires = match requested_expires(msg) {
        Ok(e) => e,
        Err(code) => {
            edge.reply(now, key, bad_expires(msg, code));
            return true;
        }
    };
    sub.expires_at = now + Duration::from_secs(expires as u64);
    let (tag, user, flow) = (k.1.clone(), sub.user.clone(), sub.dialog.flow);
    respond(edge, now, key, msg, &tag, &user, flow, expires);
    if expires == 0 {
        info!(resource = %user, "lamp unsubscribed");
        notify(edge, now, &k, Some("terminated"), &[]);
        forget(edge, now, &k);
    } else {
        notify(edge, now, &k, None, &[]);
        if let Some(Resource::Ext(e)) = edge.blf.subs.get(&k).map(|s| s.resource.clone()) {
            report_watch(edge, now, &e);
        }
    }
    true
}

/// The subscription's Expires: `Err(400)` when it is not a number, `Err(423)` when too brief.
fn requested_expires(msg: &Message) -> Result<u32, u16> {
    let e = match msg.header(Name::Expires) {
        None => MAX_EXPIRES,
        Some(v) => delta_seconds(v).ok_or(400u16)?,
    };
    if e != 0 && e < MIN_EXPIRES {
        return Err(423);
    }
    Ok(e.min(MAX_EXPIRES))
}

/// The answer to a refused Expires.
fn bad_expires(msg: &Message, code: u16) -> Response<'_> {
    match code {
        423 => Response::to(msg, 423).header("Min-Expires", MIN_EXPIRES_TEXT),
        _ => Response::to(msg, 400).reason("Bad Expires"),
    }
}

#[allow(clippy::too_many_arguments)]
fn respond(
    edge: &mut Lamping<'_>,
    now: Instant,
    key: &ServerKey,
    msg: &Message,
    tag: &str,
    user: &str,
    flow: Flow,
    expires: u32,
) {
    let c = edge.local.contact(user, flow.proto);
    let e = expires.to_string();
    edge.reply(
        now,
        key,
        Response::to(msg, 200)
            .tag(tag)
            .header("Contact", &c)
            .header("Expires", &e),
    );
}

/// Send the subscription's current state; `terminated`: the final NOTIFY's state; `ended`:
/// rings just over, shown terminated on an extension's lamp.
fn notify(
    edge: &mut Lamping<'_>,
    now: Instant,
    k: &SubKey,
    terminated: Option<&str>,
    ended: &[Ringing],
) {
    let tenant = edge.cfg.tenant.domain.clone();
    let Some(sub) = edge.blf.subs.get(k) else {
        return;
    };
    let entity = format!("sip:{}@{tenant}", sub.user);
    let body = match &sub.resource {
        Resource::Slot(s) => {
            let parked: Vec<Parked> = edge
                .orbit
                .in_slot(&tenant, *s)
                .cloned()
                .into_iter()
                .collect();
            crate::dialog_info::document(&entity, sub.version, &parked, &tenant)
        }
        Resource::Lot(l) => {
            let parked: Vec<Parked> = edge.orbit.occupied(l).cloned().collect();
            crate::dialog_info::document(&entity, sub.version, &parked, &tenant)
        }
        Resource::Ext(e) => {
            let ringing: Vec<Ringing> = edge
                .orbit
                .rings_of_ext(&tenant, e)
                .into_iter()
                .cloned()
                .collect();
            crate::dialog_info::ext_document(&entity, sub.version, &ringing, ended)
        }
    };
    let state = match terminated {
        Some(t) => t.to_string(),
        None => format!(
            "active;expires={}",
            sub.expires_at.saturating_duration_since(now).as_secs()
        ),
    };
    let sub = edge.blf.subs.get_mut(k).expect("present");
    sub.version += 1;
    edge.sv.send_in_dialog(
        now,
        &mut sub.dialog,
        "NOTIFY",
        &[("Event", "dialog"), ("Subscription-State", &state)],
        Some((CONTENT_TYPE, body.as_bytes())),
        Owner::Lamp { sub: k.clone() },
    );
}

/// An orbit event changed a slot, or a call ringing an extension: tell everyone watching it.
pub(crate) fn on_event(edge: &mut Lamping<'_>, now: Instant, ev: &Event) {
    let (ringing, ended): (&[Ringing], &[Ringing]) = match ev {
        Event::Ringing(r) | Event::RingAnswered(r) => (std::slice::from_ref(r), &[]),
        Event::RingEnded { ringing, .. } | Event::PickedUp { ringing, .. } => {
            (&[], std::slice::from_ref(ringing))
        }
        Event::LeaseLapsed { rings, .. } | Event::EdgeRestarted { rings, .. } => (&[], rings),
        _ => (&[], &[]),
    };
    if let Event::LeaseLapsed { edge: e, .. } | Event::EdgeRestarted { edge: e, .. } = ev {
        if *e == edge.id {
            // The registry dropped this edge's watches with its lease: said again.
            edge.sv.watches_lost();
            let exts: Vec<String> = edge.blf.by_ext.keys().cloned().collect();
            for ext in exts {
                report_watch(edge, now, &ext);
            }
        }
    }
    let tenant = &edge.cfg.tenant.domain;
    let mut exts: Vec<&str> = ringing
        .iter()
        .chain(ended)
        .filter(|r| r.tenant == *tenant)
        .map(|r| r.ext.as_str())
        .collect();
    exts.sort_unstable();
    exts.dedup();
    for ext in exts {
        let Some(keys) = edge.blf.by_ext.get(ext) else {
            continue;
        };
        let keys: Vec<SubKey> = keys.iter().cloned().collect();
        let gone: Vec<Ringing> = ended
            .iter()
            .filter(|e| e.ext == ext && e.tenant == edge.cfg.tenant.domain)
            .cloned()
            .collect();
        for k in keys {
            notify(edge, now, &k, None, &gone);
        }
    }
    let touched = ev.slots();
    if touched.is_empty() {
        return;
    }
    let keys: Vec<SubKey> = edge
        .blf
        .subs
        .iter()
        .filter(|(_, s)| {
            touched.iter().any(|(lot, slot)| match &s.resource {
                Resource::Slot(n) => n == slot,
                Resource::Lot(l) => l == *lot,
                Resource::Ext(_) => false,
            })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        notify(edge, now, &k, None, &[]);
    }
}

/// The whole orbit state was replaced (a resync): every lamp gets its state again.
pub(crate) fn refresh_all(edge: &mut Lamping<'_>, now: Instant) {
    let keys: Vec<SubKey> = edge.blf.subs.keys().cloned().collect();
    for k in keys {
        notify(edge, now, &k, None, &[]);
    }
}

/// The pickup groups changed: extension lamps their subscriber may no longer watch end, with
/// a final NOTIFY saying so (RFC 6665 `rejected`: the policy changed).
pub(crate) fn rules_changed(edge: &mut Lamping<'_>, now: Instant) {
    let refused: Vec<SubKey> = edge
        .blf
        .subs
        .iter()
        .filter(|(_, s)| match &s.resource {
            Resource::Ext(ext) => {
                *ext != s.dialog.user && !edge.sv.pickup_rules.may_take(&s.dialog.user, ext)
            }
            _ => false,
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in refused {
        info!(resource = %edge.blf.subs[&k].user, subscriber = %edge.blf.subs[&k].dialog.user, "extension lamp no longer allowed: ended");
        notify(edge, now, &k, Some("terminated;reason=rejected"), &[]);
        forget(edge, now, &k);
    }
}

/// The subscriber refused or never answered a NOTIFY: the subscription is gone.
pub(crate) fn on_notify_response(
    edge: &mut Lamping<'_>,
    now: Instant,
    sub: &(String, String),
    code: Option<u16>,
) {
    match code {
        Some(c) if c < 300 || c == 401 || c == 407 => {}
        _ => {
            if forget(edge, now, sub) {
                debug!(?code, "lamp subscription dropped");
            }
        }
    }
}

/// Every second: end expired subscriptions with a final NOTIFY.
pub(crate) fn expire(edge: &mut Lamping<'_>, now: Instant) {
    let due: Vec<(String, String)> = edge
        .blf
        .subs
        .iter()
        .filter(|(_, s)| s.expires_at <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in due {
        notify(edge, now, &k, Some("terminated;reason=timeout"), &[]);
        forget(edge, now, &k);
    }
}
