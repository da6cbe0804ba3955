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
    // Sites B and C listen 10 and 20 ports above site A; registry nodes on three ports up
    // from --grpc; RTP 3000 ports up from --rtp.
    // One block of this process's own: SIP at its start (and 1, 10, 11, 20, 21 up), the
    // registry's three gRPC ports 50 up.
    let (port, _) = free_range(100);
    let grpc = port + 50;
    let (rtp, _) = free_range(3000);
    let data = std::env::temp_dir().join(format!("orbit-dev-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .args(["dev", "--sip", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .args(["--grpc", &grpc.to_string(), "--rtp", &rtp.to_string()])
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
            // Every site's lease granted: the registry is up and the edges use it.
            if l.contains("registry lease held") {
                let _ = tx.send(());
            }
        }
    });
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("dev mode did not start three sites on the registry");
    }
    assert!(
        data.join("dev-cert.pem").exists(),
        "dev TLS certificate made"
    );
    // Register 1001 / pw1001 as the README says, from a SIPp phone, at site A; and 2001 at B.
    let register = |at: u16, ext: &str| {
        Command::new("sipp")
            .arg(format!("127.0.0.1:{at}"))
            .arg("-sf")
            .arg(scenario("register.xml"))
            .args([
                "-s",
                ext,
                "-au",
                ext,
                "-ap",
                &format!("pw{ext}"),
                "-key",
                "expires",
                "60",
            ])
            .args(["-m", "1", "-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-nostdin", "-timeout", "10s", "-timeout_error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(
        register(port, "1001").success(),
        "1001/pw1001 registers at site A in dev mode"
    );
    assert!(
        register(port + 10, "2001").success(),
        "2001/pw2001 registers at site B in dev mode"
    );
    // Site A's edge admin listener shows 1001's phone, to the admin certificate dev made.
    let pki = data.join("pki");
    let out = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args(["--endpoint", &format!("127.0.0.1:{}", grpc + 10), "--json"])
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("admin.pem"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args(["registrations", "--ext", "1001"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"ext\":\"1001\""), "{text}");
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let st = child.wait().unwrap();
    assert!(st.success(), "dev mode exits cleanly on Ctrl-C: {st:?}");
    let banner = banner.join().unwrap();
    for want in [
        "site-a".to_string(),
        "site-b".into(),
        "site-c".into(),
        "1001-1010".into(),
        "3001-3010".into(),
        "pw1001".into(),
        "dial *8".into(),
        format!("{}-{}", rtp + 2000, rtp + 2999),
        port.to_string(),
        (port + 20).to_string(),
        (grpc + 2).to_string(),
        (grpc + 10).to_string(),
    ] {
        assert!(banner.contains(&want), "banner lacks {want}:\n{banner}");
    }
    let _ = std::fs::remove_dir_all(&data);
}
