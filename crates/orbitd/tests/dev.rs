//! `orbitd dev`, the README's first command: it starts, says how to connect, and the
//! documented credentials work.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn dev_mode_starts_and_accepts_the_documented_credentials() {
    require_sipp();
    let port = free_port();
    let data = std::env::temp_dir().join(format!("orbit-dev-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .args(["dev", "--sip", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if l.contains("edge started") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("dev mode did not start");
    assert!(
        data.join("dev-cert.pem").exists(),
        "dev TLS certificate made"
    );
    // Register 1001 / pw1001 as the README says, from a SIPp phone.
    let st = Command::new("sipp")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-sf")
        .arg(scenario("register.xml"))
        .args([
            "-s", "1001", "-au", "1001", "-ap", "pw1001", "-key", "expires", "60",
        ])
        .args(["-m", "1", "-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-nostdin", "-timeout", "10s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "1001/pw1001 registers in dev mode");
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let st = child.wait().unwrap();
    assert!(st.success(), "dev mode exits cleanly on Ctrl-C: {st:?}");
    let banner = banner.join().unwrap();
    for want in [
        "site-a",
        "1001-1010",
        "pw1001",
        "20000-20999",
        &port.to_string(),
    ] {
        assert!(banner.contains(want), "banner lacks {want}:\n{banner}");
    }
    let _ = std::fs::remove_dir_all(&data);
}
