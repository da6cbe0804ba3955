//! A registry member cut off from the others takes the log again soon after the cut heals:
//! the leader's connection to it, whose packets were dropped, is not waited for (TCP would
//! retransmit only seconds later) but replaced by a fresh one.

use std::time::{Duration, Instant};

use orbit_chaos::cluster::Cluster;
use orbit_chaos::net::{Net, Way};
use orbit_chaos::run::orbitd_beside_test;

#[test]
fn a_member_cut_off_takes_the_log_again_within_seconds_of_the_heal() {
    let net = Net::new(&["site-a", "site-b", "site-c"]).expect("hosts");
    let dir = std::env::temp_dir().join(format!("orbit-chaos-rejoin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let lot = "[[edge.tenant.lots]]\npark_ext = \"700\"\nslots = \"701-709\"\n";
    // Leases renewed every second: the log moves while the member is away.
    let cluster =
        Cluster::start(&net, &orbitd_beside_test(), &dir, lot, &[], 3, &[]).expect("the cluster");
    let t0 = Instant::now();
    let leader = loop {
        if let Some(l) = cluster.find_leader() {
            break l;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no leader");
        std::thread::sleep(Duration::from_millis(200));
    };
    let away = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != away).collect();
    for round in 0..2 {
        net.cut(away, &others, Way::Both).expect("cut");
        std::thread::sleep(Duration::from_secs(4));
        net.heal(away).expect("heal");
        let healed = Instant::now();
        // What the cluster committed while the member was away.
        let target = loop {
            if let Some(s) = cluster.find_leader().and_then(|l| cluster.status(l)) {
                break s.applied;
            }
            assert!(
                healed.elapsed() < Duration::from_secs(10),
                "no leader after the heal"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        loop {
            let s = cluster.status(away);
            if s.is_some_and(|s| s.applied >= target && s.leader.is_some()) {
                break;
            }
            assert!(
                healed.elapsed() < Duration::from_secs(3),
                "round {round}: member {away} still short of index {target} 3 s after the \
                 heal: {s:?} (files in {})",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("round {round}: back {:?} after the heal", healed.elapsed());
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
