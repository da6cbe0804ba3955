//! The short profile, in the test command CI runs: a fixed seed, 60 s of parks, retrieves
//! and recalls at three sites on hosts of their own, with the leader killed, paused and
//! deafened, a follower killed, a follower's disk filled, the leader and a follower killed at
//! once (no quorum), an edge killed with its calls, and sites cut off meanwhile; no promise of the lot broken, by what
//! the phones saw; no process crashed or grown large. It has the machine to itself
//! (`.config/nextest.toml`). The long profile is `chaos-tests/run.sh`.

use orbit_chaos::run::{orbitd_beside_test, run, scenarios, Plan};

#[test]
fn a_minute_of_faults_breaks_no_promise_of_the_lot() {
    let dir = std::env::temp_dir().join(format!("orbit-chaos-short-{}", std::process::id()));
    // Seed 853 draws a fault of each kind in its first nine, a disk filled fourth (the
    // schedule's draws are the seed's; how many fit in the time is not).
    let plan = Plan {
        seed: 853,
        seconds: 60,
        park_secs: 5,
        election_ms: 2_500,
        skew_ms: 0,
        transfers_only: false,
    };
    let out = run(&orbitd_beside_test(), &scenarios(), &dir, &plan).expect("the run");
    println!("{}", out.line());
    for f in &out.faults {
        println!("{f}");
    }
    for v in &out.report.violations {
        println!("VIOLATION {v}");
    }
    // The run did what it is for: faults of many kinds, and the phones at work through them.
    let kinds: std::collections::BTreeSet<_> = out.faults.iter().map(|f| f.fault.kind()).collect();
    assert!(
        kinds.len() >= 7 && kinds.contains("disk full"),
        "{kinds:?}: {}",
        out.line()
    );
    assert!(out.report.parks_made >= 20, "{}", out.line());
    assert!(
        out.report.retrieved >= 5 && out.report.recalled >= 5,
        "{}",
        out.line()
    );
    assert!(out.crashed.is_empty(), "{:?}", out.crashed);
    // A few parked calls and a short log: no process should grow near this.
    for (p, start, end) in &out.memory {
        println!("memory {p:?}: {start} KiB -> {end} KiB");
        assert!(*end < 256 * 1024, "{p:?} at {end} KiB");
    }
    assert!(
        out.report.violations.is_empty(),
        "{} (files in {})",
        out.line(),
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
