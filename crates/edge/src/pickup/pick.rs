//! The picker's side: `*8` (the call ringing longest in the picker's groups), `*8<ext>` or
//! `**<ext>` (the call ringing that extension), or an INVITE whose `Replaces` names a ringing
//! call's dialog (a lamp key, RFC 3891 `early-only`). Who may take what is checked here; which
//! call, if any, the picker has is the log's decision.
//!
//! ```text
//! INVITE *8 ─▶ groups? (403) ─▶ Pickup ─▶ PickedUp(ring here)  ─▶ handover::take_here
//!                                      ├▶ PickedUp(ring at B)  ─▶ trunk INVITE to B
//!                                      └▶ NotRinging           ─▶ 404 (481 for Replaces)
//! ```

use super::*;

/// A picker whose pickup the log is ordering: its INVITE.
pub(crate) struct Pick {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    pub picker: String,
    /// It came as an INVITE with Replaces (a lamp key): refusals are 481, as RFC 3891 says.
    pub replaces: bool,
}

/// A pickup dialled by `picker` (authenticated): checked against the groups, then asked of the
/// log.
pub(crate) fn on_pickup_dial(
    edge: &mut Picking,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
    picker: String,
    dial: PickupDial<'_>,
) {
    let exts = match dial {
        PickupDial::Group => {
            let exts = edge.pickup_rules.group_of(&picker);
            if exts.is_empty() {
                info!(%picker, "group pickup by someone in no pickup group");
                let r = Response::to(&msg, 403).reason("Not In A Pickup Group");
                return edge.reply(now, key, r);
            }
            exts
        }
        PickupDial::Directed(ext) => {
            if edge.extension(ext).is_none() {
                let r = Response::to(&msg, 404).reason("No Such Extension");
                return edge.reply(now, key, r);
            }
            if !edge.pickup_rules.may_take(&picker, ext) {
                info!(%picker, %ext, "directed pickup outside the picker's groups");
                let r = Response::to(&msg, 403).reason("Not In Your Pickup Group");
                return edge.reply(now, key, r);
            }
            vec![ext.to_string()]
        }
    };
    let p = Pick {
        key: key.clone(),
        flow,
        msg,
        picker,
        replaces: false,
    };
    ask(edge, now, p, exts, None);
}

/// An INVITE with `Replaces` `r` from `picker`: a pickup when it names a ringing call's dialog
/// (false: it names none, and is not pickup's).
pub(crate) fn on_replaces(
    edge: &mut Picking,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: &Message,
    picker: &str,
    r: &Replaces,
) -> bool {
    let tags = [r.to_tag.as_str(), r.from_tag.as_str()];
    let Some(ringing) = edge.orbit.ringing_dialog(&r.call_id, tags) else {
        // `early-only` may replace nothing but a ringing call (RFC 3891 §3): never a call
        // that is up, whoever's it is.
        if r.early_only {
            let why = match edge.dialog_named(r) {
                Some(_) => "Call No Longer Ringing",
                None => "No Such Ringing Call",
            };
            edge.reply(now, key, Response::to(msg, 481).reason(why));
            return true;
        }
        return false;
    };
    let (ring, ext) = (ringing.id, ringing.ext.clone());
    if ringing.tenant != edge.cfg.tenant.domain {
        warn!(%picker, ring, "Replaces names a call ringing for another tenant: refused");
        edge.reply(now, key, Response::to(msg, 403).reason("Not Your Tenant"));
        return true;
    }
    if !edge.pickup_rules.may_take(picker, &ext) {
        info!(%picker, %ext, "lamp key pickup outside the picker's groups");
        let resp = Response::to(msg, 403).reason("Not In Your Pickup Group");
        edge.reply(now, key, resp);
        return true;
    }
    let p = Pick {
        key: key.clone(),
        flow,
        msg: msg.clone(),
        picker: picker.to_string(),
        replaces: true,
    };
    ask(edge, now, p, vec![ext], Some(ring));
    true
}

/// Ask the log for a call ringing one of `exts` (ring `ring`, if named) for picker `p`.
fn ask(edge: &mut Picking, now: Instant, p: Pick, exts: Vec<String>, ring: Option<RingId>) {
    // On one site the pickup is applied at once: a 100 would only precede the final answer.
    if edge.port.backend != crate::services::orbit_port::Backend::Local {
        edge.reply(now, &p.key, Response::to(&p.msg, 100));
    }
    let cmd = Command::Pickup {
        tenant: edge.cfg.tenant.domain.clone(),
        exts,
        ring,
        by: edge.picker_name(&p.picker),
    };
    let span = orbit_trace::within(
        None,
        || info_span!(parent: None, "pickup", by = %p.picker, edge = %edge.id),
    );
    let _g = span.enter();
    edge.pickup.picking.insert(p.key.clone(), false);
    edge.propose_then(now, cmd, PickThen::Pick(Box::new(p)));
}

/// The log's answer to picker `p`: the call it has (here, or at another site), or a refusal.
pub(crate) fn pick_outcome(edge: &mut Picking, now: Instant, p: Pick, outcome: Outcome) {
    let cancelled = edge.pickup.picking.remove(&p.key) == Some(true);
    if let Ok(Event::PickedUp {
        parked: Some(parked),
        by,
        ..
    }) = outcome
    {
        if cancelled {
            // A recall picked up and let go: back in its slot, as a retrieve cancelled.
            let a = crate::park::AfterClaim {
                key: p.key,
                flow: p.flow,
                msg: p.msg,
                retriever: p.picker,
                slot: parked.slot,
            };
            let claimed = Ok(Event::Claimed {
                parked: *parked,
                by,
            });
            return crate::park::claim_cancelled(edge, now, &a, claimed);
        }
        return take_recall(edge, now, p, *parked);
    }
    if cancelled {
        edge.reply(now, &p.key, Response::to(&p.msg, 487));
        if let Ok(Event::PickedUp { ringing, .. }) = &outcome {
            info!(
                ring = ringing.id,
                "picker cancelled after its pickup won: the call rings on"
            );
            if ringing.call.edge == edge.id {
                if let Some(id) = adopt_ring(edge, ringing) {
                    picker_gone(edge, now, id);
                }
            }
        }
        return;
    }
    match outcome {
        Ok(Event::PickedUp { ringing, .. }) if ringing.call.edge == edge.id => {
            adopt_ring(edge, &ringing);
            take_here(edge, now, ringing.id, &p, None)
        }
        Ok(Event::PickedUp { ringing, .. }) => fetch(edge, now, p, ringing),
        Err(OrbitError::Unavailable(_)) => {
            let r = Response::to(&p.msg, 503)
                .reason("Pickup Unavailable")
                .header("Retry-After", "5");
            edge.reply(now, &p.key, r);
        }
        Err(OrbitError::Rejected(orbit_state::Rejection::NotRinging)) if p.replaces => {
            let r = Response::to(&p.msg, 481).reason("Call No Longer Ringing");
            edge.reply(now, &p.key, r);
        }
        other => {
            if let Err(e) = &other {
                debug!(error = %e, "pickup found nothing");
            }
            let r = Response::to(&p.msg, 404).reason("Nothing To Pick Up");
            edge.reply(now, &p.key, r);
        }
    }
}

/// The picker here won a call ringing at another site: call that site's edge for it (its
/// INVITE claims the ring, at the log index the pickup was committed at), and bridge the
/// picker to that leg.
fn fetch(edge: &mut Picking, now: Instant, p: Pick, ringing: orbit_state::Ringing) {
    let site = ringing.call.edge.clone();
    let claim = crate::trunk::Claim::Ring(ringing.id, edge.port.committed_at);
    let Some(t) = crate::trunk::peer_target(edge, &site, &ringing.ext, Some(claim)) else {
        warn!(%site, ring = ringing.id, "picked up a call ringing at a site with no trunk to it");
        let r = Response::to(&p.msg, 502).reason("No Trunk To Site");
        return edge.reply(now, &p.key, r);
    };
    info!(%site, ring = ringing.id, ext = %ringing.ext, "picking up over the trunk");
    let nc = NewCall {
        caller: p.picker,
        callee: ringing.ext,
        display: None,
        max_forwards: 70,
    };
    edge.start_call(now, &p.key, p.flow, p.msg, nc, vec![t]);
}

/// The picker cancelled its INVITE while its pickup was being ordered: the 487 goes with the
/// outcome. False: not a picker's INVITE.
pub(crate) fn cancel_picking(edge: &mut Picking, invite: &ServerKey) -> bool {
    match edge.pickup.picking.get_mut(invite) {
        Some(c) => {
            *c = true;
            true
        }
        None => false,
    }
}
