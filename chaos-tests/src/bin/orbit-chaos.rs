//! `orbit-chaos --seconds N --seed S [--park-secs 5] [--election-ms 2500] [--skew-secs K]
//! [--transfers-only]`: one chaos run (the long profile), site C's clocks K s ahead if asked
//! (and only leadership transfers to it, if asked); prints its seed, its faults, every
//! violation and one line of figures; exits 1 if a promise was broken.

use std::path::PathBuf;
use std::process::ExitCode;

use orbit_chaos::run::{run, scenarios, Plan};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: u64| -> u64 {
        match arg(&args, name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("{name} {v:?}: not a number");
                std::process::exit(2)
            }),
        }
    };
    let plan = Plan {
        seed: num("--seed", rand_seed()),
        seconds: num("--seconds", 300),
        park_secs: num("--park-secs", 5),
        election_ms: num("--election-ms", 2_500) as i64,
        skew_ms: num("--skew-secs", 0) as i64 * 1000,
        transfers_only: args.iter().any(|a| a == "--transfers-only"),
    };
    let orbitd = PathBuf::from(arg(&args, "--orbitd").unwrap_or_else(|| "orbitd".into()));
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("orbit-chaos-{}-{}", plan.seed, std::process::id()))
            .display()
            .to_string()
    }));
    println!(
        "seed {} for {} s; files in {}",
        plan.seed,
        plan.seconds,
        dir.display()
    );
    let out = match run(&orbitd, &scenarios(), &dir, &plan) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos run: {e}");
            return ExitCode::from(2);
        }
    };
    for f in &out.faults {
        println!("{f}");
    }
    for (p, start, end) in &out.memory {
        println!("memory {p:?}: {start} KiB -> {end} KiB");
    }
    for v in &out.report.violations {
        println!("VIOLATION {v}");
    }
    println!("{}", out.line());
    if out.report.violations.is_empty() && out.crashed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
