//! The edge's registry lease: renewed a third of its time on, and again a second after a
//! renewal that failed.

use orbit_state::Command;

use super::registry::{registry_net, Registry};
use super::*;

/// The long chaos run's finding: a registry outage (the quorum lost, then the leader paused)
/// swallowed two renewals five seconds apart, and the lease lapsed with a call parked here.
/// A failed renewal is tried again a second later; the cadence is a third of the lease again
/// after that, not doubled.
#[test]
fn a_lease_renewal_that_failed_is_tried_again_a_second_later() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    let lease = |net: &mut Net| {
        net.edge
            .take_proposals()
            .into_iter()
            .filter(|p| matches!(p.cmd, Command::Lease { .. }))
            .collect::<Vec<_>>()
    };
    net.advance(Duration::from_secs(5));
    let renewal = lease(&mut net);
    assert_eq!(renewal.len(), 1, "renewed a third of the lease on");
    let unavailable = crate::orbit::OrbitError::Unavailable("no leader".into());
    net.edge
        .on_orbit_outcome(net.now, renewal[0].token, 0, Err(unavailable));
    net.collect();
    net.advance(Duration::from_millis(999));
    assert!(lease(&mut net).is_empty());
    net.advance(Duration::from_millis(1));
    let again = lease(&mut net);
    assert_eq!(again.len(), 1, "tried again a second later");
    let at = net.edge.now_ms(net.now);
    let r = reg.orbit.apply(at, &again[0].cmd);
    net.edge
        .on_orbit_outcome(net.now, again[0].token, 0, r.map_err(Into::into));
    net.collect();
    // Then every five seconds from the retry, once each (the first cadence's timer is stale).
    let mut renewals = 0;
    for _ in 0..100 {
        net.advance(Duration::from_millis(100));
        for p in lease(&mut net) {
            renewals += 1;
            let at = net.edge.now_ms(net.now);
            let r = reg.orbit.apply(at, &p.cmd);
            net.edge
                .on_orbit_outcome(net.now, p.token, 0, r.map_err(Into::into));
            net.collect();
        }
    }
    assert_eq!(renewals, 2, "ten seconds: two renewals");
}
