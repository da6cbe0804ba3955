//! Site C's clocks 5 s ahead (libfaketime on its registry node and edge), and the leadership
//! handed to C's node again and again while the phones park at every site: no recall comes
//! before its deadline by the phones' clocks, none later than the allowance. Before the
//! registry measured deadlines on each node's monotonic clock (`log_clock.rs`), C's node
//! fired parks made under the others up to 5 s early (`orbit-chaos --seconds 45 --seed 7
//! --skew-secs 5`: 7 recalls 0.7-3.8 s early).

use orbit_chaos::run::{orbitd_beside_test, run, scenarios, Plan};

#[test]
fn a_leader_whose_clock_runs_ahead_fires_no_deadline_early() {
    let dir = std::env::temp_dir().join(format!("orbit-chaos-skew-{}", std::process::id()));
    let plan = Plan {
        seed: 7,
        seconds: 40,
        park_secs: 5,
        election_ms: 2_500,
        skew_ms: 5_000,
        transfers_only: true,
    };
    let out = run(&orbitd_beside_test(), &scenarios(), &dir, &plan).expect("the run");
    println!("{}", out.line());
    for f in &out.faults {
        println!("{f}");
    }
    for v in &out.report.violations {
        println!("VIOLATION {v}");
    }
    let to_c = out
        .faults
        .iter()
        .filter(|f| f.fault.kind() == "transfer" && f.host == 2)
        .count();
    assert!(to_c >= 2, "C's node led too seldom: {}", out.line());
    assert!(out.report.recalled >= 5, "{}", out.line());
    assert!(out.crashed.is_empty(), "{:?}", out.crashed);
    assert!(
        out.report.violations.is_empty(),
        "{} (files in {})",
        out.line(),
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
