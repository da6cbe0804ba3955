//! How orbitctl prints what it got: aligned columns for people, JSON for scripts.

use comfy_table::{presets, Table};
use orbit_registry::admin_pb::{
    ClusterStatus, ExtensionLocation, Lot, ParkEvent, ParkedCall, PickupGroup,
};
use serde_json::{json, Value};

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// Unix milliseconds as UTC time of day with milliseconds (a date is rarely the question).
fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

pub fn cluster_status(s: &ClusterStatus, as_json: bool) {
    if as_json {
        let v = json!({
            "node_id": s.node_id,
            "leader_id": s.leader_id,
            "term": s.term,
            "last_log_index": s.last_log_index,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "members": s.members.iter().map(|m| json!({
                "id": m.id, "addr": m.addr, "voter": m.voter,
                "matched_index": m.matched_index, "lag": m.lag,
            })).collect::<Vec<Value>>(),
            "edges": s.edges.iter().map(|e| json!({
                "name": e.name, "lease_until_ms": e.lease_until_ms,
                "parked_calls": e.parked_calls, "rings": e.rings,
                "draining": e.draining, "trunk": e.trunk, "calls": e.calls,
                "relay_ports": e.relay_ports,
            })).collect::<Vec<Value>>(),
        });
        println!("{v}");
        return;
    }
    let leader = match s.leader_id {
        0 => "none known".to_string(),
        id => id.to_string(),
    };
    println!(
        "node {}  leader {leader}  term {}  log {}  commit {}  applied {}\n",
        s.node_id, s.term, s.last_log_index, s.commit_index, s.applied_index
    );
    let rows = s
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.addr.clone(),
                if m.voter { "voter" } else { "learner" }.into(),
                if m.id == s.leader_id { "leader" } else { "" }.into(),
                m.matched_index.map_or("-".into(), |i| i.to_string()),
                m.lag.map_or("-".into(), |l| l.to_string()),
            ]
        })
        .collect();
    println!(
        "{}\n",
        table(&["ID", "ADDRESS", "ROLE", "", "MATCHED", "LAG"], rows)
    );
    if s.members.iter().any(|m| m.lag.is_none()) {
        println!("(matched and lag: only the leader knows; ask it with --endpoint)\n");
    }
    let rows = s
        .edges
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                if e.draining { "draining" } else { "up" }.into(),
                e.trunk.clone(),
                time(e.lease_until_ms),
                e.calls.to_string(),
                e.parked_calls.to_string(),
                e.rings.to_string(),
                e.relay_ports.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "EDGE",
                "STATE",
                "TRUNK",
                "LEASE UNTIL",
                "CALLS",
                "PARKED",
                "RINGS",
                "RELAY PORTS",
            ],
            rows
        )
    );
}

fn call_json(c: &ParkedCall) -> Value {
    json!({
        "park_id": c.park_id, "tenant": c.tenant, "lot": c.lot, "slot": c.slot,
        "caller_uri": c.caller_uri, "caller_display": c.caller_display, "parker": c.parker,
        "edge": c.edge, "parked_at_ms": c.parked_at_ms, "deadline_ms": c.deadline_ms,
        "phase": c.phase, "sent_to": c.sent_to,
    })
}

fn call_row(c: &ParkedCall) -> Vec<String> {
    let caller = if c.caller_display.is_empty() {
        c.caller_uri.clone()
    } else {
        format!("\"{}\" {}", c.caller_display, c.caller_uri)
    };
    vec![
        c.park_id.to_string(),
        c.slot.to_string(),
        c.lot.clone(),
        caller,
        c.parker.clone(),
        c.edge.clone(),
        time(c.parked_at_ms),
        time(c.deadline_ms),
        if c.sent_to.is_empty() {
            c.phase.clone()
        } else {
            format!("{} to {}", c.phase, c.sent_to)
        },
    ]
}

const CALL_HEADER: [&str; 9] = [
    "ID", "SLOT", "LOT", "CALLER", "PARKER", "EDGE", "PARKED", "DEADLINE", "PHASE",
];

pub fn parked(calls: &[ParkedCall], as_json: bool) {
    if as_json {
        println!("{}", Value::Array(calls.iter().map(call_json).collect()));
        return;
    }
    if calls.is_empty() {
        println!("no parked calls");
        return;
    }
    println!(
        "{}",
        table(&CALL_HEADER, calls.iter().map(call_row).collect())
    );
}

pub fn park_event(e: &ParkEvent, as_json: bool) {
    if as_json {
        let v = json!({
            "index": e.index, "kind": e.kind, "detail": e.detail,
            "call": e.call.as_ref().map(call_json),
        });
        println!("{v}");
        return;
    }
    let Some(c) = &e.call else { return };
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", e.detail)
    };
    println!(
        "{:>8}  {:<12} slot {} {} parked by {} at {}{detail}",
        e.index, e.kind, c.slot, c.caller_uri, c.parker, c.edge
    );
}

pub fn locations(ext: &str, locations: &[ExtensionLocation], as_json: bool) {
    if as_json {
        let v: Vec<Value> = locations
            .iter()
            .map(|l| json!({ "edge": l.edge, "until_ms": l.until_ms }))
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    if locations.is_empty() {
        println!("{ext} is registered nowhere");
        return;
    }
    let rows = locations
        .iter()
        .map(|l| vec![l.edge.clone(), time(l.until_ms)])
        .collect();
    println!("{}", table(&["EDGE", "REGISTERED UNTIL"], rows));
}

pub fn pickup_groups(groups: &[PickupGroup], as_json: bool) {
    if as_json {
        let v: Vec<Value> = groups
            .iter()
            .map(|g| json!({ "tenant": g.tenant, "name": g.name, "members": g.members }))
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    if groups.is_empty() {
        println!("no pickup groups");
        return;
    }
    let rows = groups
        .iter()
        .map(|g| vec![g.tenant.clone(), g.name.clone(), g.members.join(",")])
        .collect();
    println!("{}", table(&["TENANT", "GROUP", "MEMBERS"], rows));
}

pub fn lots(lots: &[Lot], as_json: bool) {
    if as_json {
        let v: Vec<Value> = lots
            .iter()
            .map(|l| {
                json!({
                    "tenant": l.tenant, "park_ext": l.park_ext, "first_slot": l.first_slot,
                    "last_slot": l.last_slot, "parking_secs": l.parking_secs,
                    "recall_ring_secs": l.recall_ring_secs, "fallback": l.fallback,
                    "choice": l.choice, "parked": l.parked,
                })
            })
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    if lots.is_empty() {
        println!("no lots");
        return;
    }
    let rows = lots
        .iter()
        .map(|l| {
            vec![
                l.tenant.clone(),
                l.park_ext.clone(),
                format!("{}-{}", l.first_slot, l.last_slot),
                format!("{} s", l.parking_secs),
                format!("{} s", l.recall_ring_secs),
                if l.fallback.is_empty() {
                    "-".into()
                } else {
                    l.fallback.clone()
                },
                l.choice.clone(),
                l.parked.to_string(),
            ]
        })
        .collect();
    let header = [
        "TENANT",
        "LOT",
        "SLOTS",
        "PARKING",
        "RECALL RING",
        "FALLBACK",
        "CHOICE",
        "PARKED",
    ];
    println!("{}", table(&header, rows));
}

pub fn calls(r: &orbit_registry::admin_pb::ListCallsResponse, as_json: bool) {
    if as_json {
        let v = json!({
            "edge": r.edge,
            "calls": r.calls.iter().map(|c| json!({
                "id": c.id, "caller": c.caller, "callee": c.callee, "state": c.state,
                "seconds": c.seconds, "slot": c.slot,
            })).collect::<Vec<Value>>(),
        });
        println!("{v}");
        return;
    }
    if r.calls.is_empty() {
        println!("no calls at {}", r.edge);
        return;
    }
    let rows = r
        .calls
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.caller.clone(),
                c.callee.clone(),
                c.state.clone(),
                format!("{} s", c.seconds),
                if c.slot == 0 {
                    String::new()
                } else {
                    c.slot.to_string()
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["ID", "CALLER", "CALLEE", "STATE", "FOR", "SLOT"], rows)
    );
}

pub fn registrations(r: &orbit_registry::admin_pb::ListRegistrationsResponse, as_json: bool) {
    if as_json {
        let v = json!({
            "edge": r.edge,
            "registrations": r.registrations.iter().map(|g| json!({
                "ext": g.ext, "contact": g.contact, "transport": g.transport,
                "source": g.source, "expires_seconds": g.expires_seconds,
            })).collect::<Vec<Value>>(),
        });
        println!("{v}");
        return;
    }
    if r.registrations.is_empty() {
        println!("no registrations at {}", r.edge);
        return;
    }
    let rows = r
        .registrations
        .iter()
        .map(|g| {
            vec![
                g.ext.clone(),
                g.contact.clone(),
                g.transport.clone(),
                g.source.clone(),
                format!("{} s", g.expires_seconds),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["EXT", "CONTACT", "TRANSPORT", "FROM", "EXPIRES IN"], rows)
    );
}
