//! Parking lots as the admin API speaks them: shown with the calls parked in each, and
//! taken in field by field, INVALID_ARGUMENT naming the one at fault.

use orbit_state::{LotConfig, SlotChoice};
use tonic::Status;

use crate::admin_pb as pb;

/// A lot as the API shows it, with the calls parked in it.
pub(crate) fn lot_out(c: &LotConfig, parked: usize) -> pb::Lot {
    pb::Lot {
        tenant: c.tenant.clone(),
        park_ext: c.park_ext.clone(),
        first_slot: c.first_slot,
        last_slot: c.last_slot,
        parking_secs: c.parking_ms / 1000,
        recall_ring_secs: c.recall_ring_ms / 1000,
        fallback: c.fallback.clone().unwrap_or_default(),
        choice: match c.choice {
            SlotChoice::FirstFree => "first_free",
            SlotChoice::NextAfterLast => "next_after_last",
        }
        .into(),
        parked: parked as u32,
    }
}

/// A lot from the API: each field checked, INVALID_ARGUMENT naming the one at fault.
pub(crate) fn lot_in(l: pb::Lot) -> Result<LotConfig, Status> {
    let bad = |field: &str, why: String| Status::invalid_argument(format!("lot.{field}: {why}"));
    let digits = |v: &str| !v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit());
    if l.tenant.is_empty() || l.tenant.len() > 253 {
        return Err(bad("tenant", "a SIP domain is needed".into()));
    }
    if !digits(&l.park_ext) {
        return Err(bad(
            "park_ext",
            format!("{:?} is not an extension of digits", l.park_ext),
        ));
    }
    if l.first_slot == 0 {
        return Err(bad("first_slot", "slots start at 1".into()));
    }
    if l.first_slot > l.last_slot {
        return Err(bad(
            "first_slot",
            format!("{} is after last_slot {}", l.first_slot, l.last_slot),
        ));
    }
    let secs = |field: &str, v: u64, max: u64| {
        if v == 0 || v > max / 1000 {
            Err(bad(field, format!("{v}: from 1 to {}", max / 1000)))
        } else {
            Ok(v * 1000)
        }
    };
    let parking_ms = secs("parking_secs", l.parking_secs, orbit_state::MAX_PARKING_MS)?;
    let recall_ring_ms = secs(
        "recall_ring_secs",
        l.recall_ring_secs,
        orbit_state::MAX_RING_MS,
    )?;
    if !l.fallback.is_empty() && !digits(&l.fallback) {
        return Err(bad(
            "fallback",
            format!("{:?} is not an extension of digits", l.fallback),
        ));
    }
    let choice = match l.choice.as_str() {
        "" | "first_free" => SlotChoice::FirstFree,
        "next_after_last" => SlotChoice::NextAfterLast,
        other => {
            return Err(bad(
                "choice",
                format!("{other:?}: first_free or next_after_last"),
            ))
        }
    };
    let cfg = LotConfig {
        tenant: l.tenant,
        park_ext: l.park_ext,
        first_slot: l.first_slot,
        last_slot: l.last_slot,
        parking_ms,
        recall_ring_ms,
        fallback: (!l.fallback.is_empty()).then_some(l.fallback),
        choice,
    };
    cfg.validate()
        .map_err(|e| Status::invalid_argument(format!("lot: {e}")))?;
    Ok(cfg)
}
