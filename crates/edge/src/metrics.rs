//! The edge's metrics (issue 12), published once a second by the driver from what the core
//! counts ([`Stats`](crate::core::Stats)) and holds: the core itself does no I/O and knows
//! nothing of Prometheus. Every series has an `edge` label (its identity), so that one process
//! running several edges (`orbitd dev`) shows each. `deploy/grafana/orbit.json` charts them.

use std::collections::BTreeMap;

use metrics::{counter, gauge, histogram};

use crate::core::Edge;
use crate::services::METHODS;

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Publish `edge`'s metrics now (taking the latencies recorded since the last time).
pub fn publish(edge: &mut Edge) {
    for (what, seconds) in std::mem::take(&mut edge.stats.latencies) {
        let e = edge.id.clone();
        match what {
            // Not a wait on the registry: how late a deadline fired, by the leader's stamp.
            "recall_late" => histogram!("orbit_recall_late_seconds", "edge" => e).record(seconds),
            _ => {
                histogram!("orbit_feature_seconds", "edge" => e, "feature" => what).record(seconds)
            }
        }
    }
    let id = edge.id.clone();
    let s = edge.stats();
    let e = || id.clone();
    gauge!("orbit_calls_active", "edge" => e()).set(edge.active_calls() as f64);
    for (outcome, n) in [
        ("started", s.calls_started),
        ("answered", s.calls_answered),
        ("failed", s.calls_failed),
    ] {
        counter!("orbit_calls_total", "edge" => e(), "outcome" => outcome).absolute(n);
    }
    for (i, n) in s.requests.iter().enumerate() {
        let method = METHODS.get(i).copied().unwrap_or("other");
        counter!("orbit_sip_requests_total", "edge" => e(), "method" => method).absolute(*n);
    }
    for (class, n) in CLASSES.iter().zip(s.responses) {
        counter!("orbit_sip_responses_total", "edge" => e(), "class" => *class).absolute(n);
    }
    counter!("orbit_sip_retransmissions_total", "edge" => e()).absolute(s.retransmissions);
    counter!("orbit_sip_parse_errors_total", "edge" => e()).absolute(s.parse_errors);
    counter!("orbit_sip_rate_limited_total", "edge" => e()).absolute(s.rate_limited);
    gauge!("orbit_registrations", "edge" => e()).set(edge.registrations() as f64);
    for (feature, n) in [
        ("park", s.parks),
        ("claim", s.claims),
        ("recall", s.recalls),
        ("pickup", s.pickups),
    ] {
        counter!("orbit_features_total", "edge" => e(), "feature" => feature).absolute(n);
    }
    // Parked calls this edge holds, by lot (every lot of its tenant, so that an empty one
    // reads 0 rather than vanishing).
    let mut by_lot: BTreeMap<&str, usize> = edge
        .orbit
        .lots()
        .filter(|l| l.tenant == edge.cfg.tenant.domain)
        .map(|l| (l.park_ext.as_str(), 0))
        .collect();
    for p in edge.orbit.all_parked().filter(|p| p.call.edge == id) {
        *by_lot.entry(p.lot.park_ext.as_str()).or_default() += 1;
    }
    for (lot, n) in by_lot {
        gauge!("orbit_parked_calls", "edge" => e(), "lot" => lot.to_string()).set(n as f64);
    }
    gauge!("orbit_lamp_subscriptions", "edge" => e()).set(edge.lamps.len() as f64);
    gauge!("orbit_relay_ports_in_use", "edge" => e()).set(edge.media_ports_in_use() as f64);
    // Only an edge on a registry has a lease; it holds it until its end, renewed or not.
    if edge.port.backend == crate::orbit::Backend::Registry {
        let held = edge.lease_holds(edge.last_now);
        gauge!("orbit_edge_lease_held", "edge" => e()).set(f64::from(u8::from(held)));
    }
}

/// The relay's packets so far: (forwarded to the other party, dropped: a stranger's or the
/// send buffer full); and its music: (parties hearing music or a prompt now, packets played).
pub fn relay(edge: &Edge, (forwarded, dropped): (u64, u64), (playing, played): (usize, u64)) {
    let e = || edge.id.clone();
    gauge!("orbit_music_streams", "edge" => e()).set(playing as f64);
    counter!("orbit_music_packets_total", "edge" => e()).absolute(played);
    counter!("orbit_rtp_packets_total", "edge" => e(), "outcome" => "forwarded")
        .absolute(forwarded);
    counter!("orbit_rtp_packets_total", "edge" => e(), "outcome" => "dropped").absolute(dropped);
}

/// The edge has stopped (drained, or the process is leaving while a registry node of the same
/// process runs on): its gauges say so rather than keep their last values.
pub fn gone(edge: &Edge) {
    let e = || edge.id.clone();
    for name in [
        "orbit_calls_active",
        "orbit_registrations",
        "orbit_lamp_subscriptions",
        "orbit_relay_ports_in_use",
        "orbit_edge_lease_held",
        "orbit_music_streams",
    ] {
        gauge!(name, "edge" => e()).set(0.0);
    }
    for l in edge
        .orbit
        .lots()
        .filter(|l| l.tenant == edge.cfg.tenant.domain)
    {
        gauge!("orbit_parked_calls", "edge" => e(), "lot" => l.park_ext.clone()).set(0.0);
    }
}
