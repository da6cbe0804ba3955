//! Logs a person can read (issue 12): a clean `orbitd dev` start says what started and then
//! nothing while the system idles (lease renewals and Raft chatter are DEBUG), with no WARN or
//! ERROR from the start's own races; `--log json` writes one JSON object per line; a start
//! that fails says why and what to do, with exit code 78 for a config file that is wrong.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// `orbitd dev` on ports of its own, its stderr lines sent to the channel as they come.
fn dev(data: &std::path::Path, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let (port, _) = free_range(100);
    let (rtp, _) = free_range(3000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .args(extra)
        .args(["dev", "--sip", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args([
            "--grpc",
            &(port + 50).to_string(),
            "--rtp",
            &rtp.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// Lines until every site holds its lease (the start is over), then those of `idle`.
fn start_then_idle(rx: &mpsc::Receiver<String>, idle: Duration) -> (Vec<String>, Vec<String>) {
    let mut start = vec![];
    let t0 = Instant::now();
    while start
        .iter()
        .filter(|l: &&String| l.contains("registry lease held"))
        .count()
        < 3
    {
        let l = rx
            .recv_timeout(Duration::from_secs(20).saturating_sub(t0.elapsed()))
            .unwrap_or_else(|_| panic!("dev did not start:\n{}", start.join("\n")));
        start.push(l);
    }
    // The start's last lines (lamps, admin listeners) settle within a moment.
    let settle = Instant::now() + Duration::from_secs(1);
    while let Ok(l) = rx.recv_timeout(settle.saturating_duration_since(Instant::now())) {
        start.push(l);
    }
    let mut later = vec![];
    let end = Instant::now() + idle;
    while let Ok(l) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        later.push(l);
    }
    (start, later)
}

#[test]
fn a_clean_start_warns_of_nothing_and_an_idle_system_logs_nothing() {
    let data = std::env::temp_dir().join(format!("orbit-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut child, rx) = dev(&data, &[]);
    // Two lease renewals of every site (every 5 s) fall in the idle time.
    let (start, idle) = start_then_idle(&rx, Duration::from_secs(11));
    let loud: Vec<&String> = start
        .iter()
        .chain(&idle)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "a clean start warns: {loud:#?}");
    assert!(
        start.iter().any(|l| l.contains("registry leader known")),
        "the leader is named: {start:#?}"
    );
    assert!(idle.is_empty(), "an idle system logs: {idle:#?}");
    // A second orbitd on the same data directory (ports of its own, so that the directory is
    // what it trips on) says what to do, exit 1.
    let (port, _) = free_range(100);
    let (rtp, _) = free_range(3000);
    let out = Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .args(["dev", "--sip", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .args([
            "--grpc",
            &(port + 50).to_string(),
            "--rtp",
            &rtp.to_string(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("orbitd: ") && l.contains("is in use by another process"))
            && err.contains("orbitd: another orbitd is using that data directory"),
        "{err}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn log_json_writes_one_object_per_line() {
    let data = std::env::temp_dir().join(format!("orbit-logs-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut child, rx) = dev(&data, &["--log", "json"]);
    let mut lines = vec![];
    let t0 = Instant::now();
    while !lines
        .iter()
        .any(|l: &String| l.contains("registry lease held"))
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "{lines:#?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            lines.push(l);
        }
    }
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_config_file_that_is_wrong_exits_78_naming_the_line_and_field() {
    let dir = std::env::temp_dir().join(format!("orbit-logs-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("orbit.toml");
    std::fs::write(
        &f,
        "[registry]\nid = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/x\"\nbogus = 1\n",
    )
    .unwrap();
    for cmd in ["run", "check-config"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orbitd"));
        match cmd {
            "run" => c.args(["run", "--config"]),
            _ => c.arg("check-config"),
        };
        let out = c.arg(&f).env_remove("RUST_BACKTRACE").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{cmd}: {err}");
        assert!(
            err.starts_with("orbitd: ") && err.contains("line 5") && err.contains("bogus"),
            "{cmd}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
