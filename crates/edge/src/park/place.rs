//! Putting a call in a slot, whichever way it came (a REFER to the park extension, an
//! attended park, one touch): the Park command is proposed (the orbit picks or checks the
//! slot, never a local guess), the call is not parkable again until its outcome, and the
//! outcome finishes the flow. Parked: the parked party hears the lot's music from its own
//! relay port, the parker's side is vacant, the parker's phones are told the slot (NOTIFY,
//! BYE, prompt). Refused: the call stays with the parker, who is told why.

use super::*;

/// The parked party as the other parties should see it.
pub(crate) fn label_of(d: &Dialog) -> (String, String, Option<String>) {
    let na = NameAddr::parse(&d.remote_hdr);
    let uri = na.as_ref().map(|n| n.uri.to_string()).unwrap_or_default();
    let display = na
        .as_ref()
        .and_then(|n| n.display)
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty());
    let label = display.clone().unwrap_or_else(|| {
        orbit_sip::Uri::parse(&uri)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_else(|| "caller".into())
    });
    (label, uri, display)
}

/// The codec the parked party is using: the first G.711 format of the other party's SDP that
/// the parked party also offered, else the parked party's own first G.711.
pub(crate) fn parked_codec(call: &Call, parked: Side) -> (Codec, u8, Option<u8>) {
    let mine = call.sdp(parked).unwrap_or(b"");
    let theirs = call.sdp(parked.other()).unwrap_or(b"");
    let my_formats = sdp::formats(mine).unwrap_or_default();
    let chosen = sdp::formats(theirs)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, n)| Codec::from_name(n))
        .find_map(|c| {
            my_formats
                .iter()
                .find(|(_, n)| Codec::from_name(n) == Some(c))
                .map(|(pt, _)| (c, *pt))
        })
        .or_else(|| sdp::g711(mine))
        .unwrap_or((Codec::Pcmu, 0));
    (chosen.0, chosen.1, sdp::telephone_event(mine))
}

/// A park being ordered: what the edge keeps until the outcome, and how the flow that asked
/// for it continues.
pub(crate) struct AfterPark {
    cid: u64,
    parker: Side,
    lot: LotKey,
    label: String,
    caller_uri: String,
    parker_ext: String,
    codec: Codec,
    pt: u8,
    te: Option<u8>,
    how: ParkBy,
}

pub(crate) enum ParkBy {
    /// A REFER in the call to park (blind; or attended, completed from that call, ending the
    /// consultation call `consult_call`).
    Refer {
        event: String,
        no_sub: bool,
        consult_call: Option<u64>,
    },
    /// A REFER in the consultation call (`consult`, from its side `from`) whose Replaces named
    /// the call to park.
    FromConsult {
        consult: u64,
        from: Side,
        event: String,
        no_sub: bool,
    },
    /// The park code pressed on side `parker`: speak the outcome to it in its codec.
    OneTouch { codec: Codec, pt: u8 },
}

/// Park the party facing away from `parker` in call `cid`: the orbit decides the slot. Until
/// the outcome the call is not parkable again; [`park_outcome`] continues.
pub(crate) fn propose_park(
    edge: &mut Parking,
    now: Instant,
    cid: u64,
    parker: Side,
    lot: LotKey,
    slot: Option<u32>,
    how: ParkBy,
) {
    let parked = parker.other();
    edge.park.ordering.insert(cid);
    let call = edge.b2bua.calls.get_mut(&cid).expect("present");
    let pd = call.dialog_ref(parked);
    let (label, caller_uri, caller_display) = label_of(pd);
    let (codec, pt, te) = parked_codec(call, parked);
    let info = CallInfo {
        caller_uri: caller_uri.clone(),
        caller_display,
        parker: call.dialog_ref(parker).user.clone(),
        edge: edge.b2bua.sv.id.clone(),
        call_id: pd.call_id.clone(),
        local_tag: pd.local_tag.clone(),
        remote_tag: NameAddr::parse(&pd.remote_hdr)
            .and_then(|n| n.tag().map(str::to_string))
            .unwrap_or_default(),
        codec: Some(codec.name().to_string()),
        // Whatever happens to the call later, at any site, joins the park's trace.
        trace: call.span.in_scope(orbit_trace::traceparent),
    };
    let after = AfterPark {
        cid,
        parker,
        lot: lot.clone(),
        label,
        caller_uri,
        parker_ext: info.parker.clone(),
        codec,
        pt,
        te,
        how,
    };
    let span = call.span.clone();
    let _g = span.enter();
    edge.propose_then(
        now,
        Command::Park {
            lot,
            slot,
            call: info,
        },
        ParkThen::Park(after),
    );
}

/// The park's outcome. Parked: the parked party hears the lot's music from its own relay
/// port, the parker's side is vacant, the parker's phones are told the slot, and the flow
/// finishes (NOTIFY, BYE, prompt). Refused: the call stays with the parker.
pub(crate) fn park_outcome(edge: &mut Parking, now: Instant, a: AfterPark, outcome: Outcome) {
    edge.park.ordering.remove(&a.cid);
    // A retrieve here that won this park's claim before this answer came: it takes the call
    // once it is held, or hears that nobody is parked.
    let claimed = edge.park.claimed_early.remove(&a.cid);
    let cid = a.cid;
    let held = parked_or_refused(edge, now, a, outcome);
    if let Some(c) = claimed {
        if held {
            crate::park::take_parked(edge, now, &c, cid);
        } else {
            nobody_parked(edge, now, &c, 404);
        }
    }
}

/// The park's outcome, for the call and its parker; whether the call is held here now.
fn parked_or_refused(edge: &mut Parking, now: Instant, a: AfterPark, outcome: Outcome) -> bool {
    let live = edge
        .calls
        .get(&a.cid)
        .is_some_and(|c| c.state() == CallState::Confirmed);
    let p = match outcome {
        Ok(Event::Parked(p)) => p,
        Ok(ev) => {
            warn!(?ev, "park answered with another event");
            park_refused(edge, now, a, &OrbitError::Unavailable("bad answer".into()));
            return false;
        }
        Err(e) => {
            warn!(error = %e, "park refused; the call stays with the parker");
            park_refused(edge, now, a, &e);
            return false;
        }
    };
    if !live {
        // The call ended while the park was being ordered: free the slot again.
        info!(slot = p.slot, "call ended while parking");
        if let ParkBy::FromConsult { consult, .. } = a.how {
            hangup(edge, now, consult, "call to park ended");
        }
        let end = Command::End {
            park: p.id,
            reason: EndReason::HungUp,
        };
        edge.propose(now, end, Then::Nothing);
        return false;
    }
    info!(slot = p.slot, by = %a.parker_ext, "parked");
    edge.stats.parks += 1;
    let parked = a.parker.other();
    let music = edge
        .park
        .music
        .get(&a.lot.park_ext)
        .cloned()
        .unwrap_or_else(builtin_music);
    let call = edge.b2bua.calls.get_mut(&a.cid).expect("present");
    if let Some(m) = call.media {
        m.play(
            &mut edge.b2bua.sv.media,
            parked.leg(),
            music,
            (a.codec, a.pt),
            true,
        );
    }
    call.vacate(a.parker);
    edge.park.held.insert(
        a.cid,
        ParkState {
            id: p.id,
            slot: p.slot,
            lot: a.lot,
            parked,
            codec: a.codec,
            pt: a.pt,
            te: a.te,
            label: a.label,
            caller_uri: a.caller_uri,
            parker: a.parker_ext.clone(),
            recall: None,
            claim_given_up: None,
        },
    );
    edge.park.by_id.insert(p.id, a.cid);
    let text = format!("Parked on {}", p.slot);
    tell(edge, now, &a.parker_ext, &p.lot.park_ext, &text);
    let (cid, from) = (a.cid, a.parker);
    match a.how {
        ParkBy::Refer {
            event,
            no_sub,
            consult_call,
        } => {
            if let Some(m) = edge.calls[&cid].media {
                m.vacate(&mut edge.media, from.leg());
            }
            if no_sub {
                call::send_bye_departed(edge, now, cid, from);
            } else {
                refer_notify(edge, now, cid, from, &event, "SIP/2.0 200 OK", Some(from));
            }
            if let Some(c) = consult_call {
                hangup(edge, now, c, "attended park completed");
            }
        }
        ParkBy::FromConsult {
            consult,
            from: cfrom,
            event,
            no_sub,
        } => {
            if let Some(m) = edge.calls[&cid].media {
                m.vacate(&mut edge.media, from.leg());
            }
            call::send_bye_departed(edge, now, cid, from);
            if !no_sub {
                refer_notify(edge, now, consult, cfrom, &event, "SIP/2.0 200 OK", None);
            }
            hangup(edge, now, consult, "attended park completed");
        }
        ParkBy::OneTouch { codec, pt } => {
            let clip = Arc::new(prompts().parked_on(p.slot));
            let after = clip.duration() + Duration::from_millis(200);
            speak(edge, now, cid, from, clip, codec, pt, after, true);
        }
    }
    crate::park::now_held(edge, now, p.id);
    true
}

fn park_refused(edge: &mut Parking, now: Instant, a: AfterPark, e: &OrbitError) {
    if !edge.calls.contains_key(&a.cid) {
        return;
    }
    match a.how {
        ParkBy::Refer { event, no_sub, .. } => {
            if !no_sub {
                refer_notify(edge, now, a.cid, a.parker, &event, refusal_frag(e), None);
            }
        }
        ParkBy::FromConsult {
            consult,
            from,
            event,
            no_sub,
        } => {
            if !no_sub && edge.calls.contains_key(&consult) {
                refer_notify(edge, now, consult, from, &event, refusal_frag(e), None);
            }
        }
        ParkBy::OneTouch { codec, pt } => {
            let clip = match e {
                OrbitError::Rejected(Rejection::LotFull) => prompts().lot_full.clone(),
                _ => prompts().park_failed.clone(),
            };
            let after = clip.duration();
            speak(edge, now, a.cid, a.parker, clip, codec, pt, after, false);
        }
    }
}

/// The sipfrag status line that reports a refused park.
fn refusal_frag(e: &OrbitError) -> &'static str {
    match e {
        OrbitError::Rejected(Rejection::LotFull) => "SIP/2.0 503 Parking Lot Full",
        OrbitError::Rejected(Rejection::SlotTaken(_)) => "SIP/2.0 486 Slot Taken",
        OrbitError::Rejected(Rejection::NotASlot(_)) => "SIP/2.0 404 No Such Slot",
        OrbitError::Unavailable(_) => "SIP/2.0 503 Parking Unavailable",
        _ => "SIP/2.0 500 Park Failed",
    }
}

/// Whether call `cid` can be parked now: answered, both parties in it, no offer pending, and
/// not parked, being parked or a call to the park extension.
pub(crate) fn parkable(edge: &Parking, cid: u64) -> bool {
    let p = &edge.park;
    edge.calls.get(&cid).is_some_and(|call| {
        call.state() == CallState::Confirmed && call.vacant().is_none() && !call.negotiating()
    }) && !p.ordering.contains(&cid)
        && !p.held.contains_key(&cid)
        && !p.consults.contains_key(&cid)
}
