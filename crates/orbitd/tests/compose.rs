//! The compose cluster (`deploy/compose`) as an operator starts it: the image built from the
//! Dockerfile, `docker compose up`, three sites each with a registry voter and an edge in
//! containers of their own, at their own addresses. SIPp phones on this host (on the WAN
//! network) park at site A and retrieve at site C with RTP both ways; `docker compose stop` of
//! site A's edge drains it and its parked call moves to another edge and is retrieved; the
//! registry leader's container is killed (`docker kill`) just before a park's deadline and
//! the recall rings the parker once.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{image, repo, run, show_tail, Phones};
use common::*;

/// This host's address on the compose WAN network (its gateway): where the phones are.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 61, 0, 1);
const EDGES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 61, 0, 21),
    Ipv4Addr::new(10, 61, 0, 22),
    Ipv4Addr::new(10, 61, 0, 23),
];
const NODES: [&str; 3] = ["10.61.0.11:50051", "10.61.0.12:50051", "10.61.0.13:50051"];

/// `docker compose` (v2) or, where only that is installed, `docker-compose` (v1).
fn compose_program() -> Vec<&'static str> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

/// A compose project started from a copy of `deploy/compose`, taken down (volumes too) when
/// dropped.
struct Cluster {
    dir: PathBuf,
    program: Vec<&'static str>,
    /// The admin certificate's flags, for orbitctl.
    admin: Vec<String>,
}

impl Cluster {
    fn up(image: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("orbit-compose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["compose.yaml", "edge.toml", "registry.toml", "bootstrap.sh"] {
            std::fs::copy(repo().join("deploy/compose").join(f), dir.join(f)).unwrap();
        }
        let secret = hex::encode(rand_bytes());
        std::fs::write(
            dir.join(".env"),
            format!("ORBIT_TRUNK_SECRET={secret}\nORBIT_IMAGE={image}\n"),
        )
        .unwrap();
        let c = Cluster {
            dir,
            program: compose_program(),
            admin: vec![],
        };
        // A project left over by a run that was killed holds the networks' subnets.
        c.compose(&["down", "-v", "--remove-orphans"]);
        c.compose(&["up", "-d"]);
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.program[0]);
        cmd.args(&self.program[1..])
            .args(["-p", "orbit-test", "-f"])
            .arg(self.dir.join("compose.yaml"))
            .args(args)
            .current_dir(&self.dir);
        cmd
    }

    fn compose(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    fn logs(&self, service: &str) -> String {
        let out = self
            .command(&["logs", "--no-color", service])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn wait_log(&self, service: &str, pat: &str, timeout: Duration) {
        let t0 = Instant::now();
        while !self.logs(service).contains(pat) {
            assert!(
                t0.elapsed() < timeout,
                "{service} never logged {pat:?}:\n{}",
                self.logs(service)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The admin certificate out of the pki volume, for orbitctl on this host.
    fn admin_tls(&mut self) -> Vec<String> {
        if self.admin.is_empty() {
            let pki = self.dir.join("pki");
            std::fs::create_dir_all(&pki).unwrap();
            for f in ["ca.pem", "admin-ops.pem", "admin-ops.key"] {
                let id = self.compose(&["ps", "-q", "registry-a"]);
                run(Command::new("docker")
                    .arg("cp")
                    .arg(format!("{}:/etc/orbit/pki/{f}", id.trim()))
                    .arg(pki.join(f)));
            }
            self.admin = [
                "--ca",
                "ca.pem",
                "--cert",
                "admin-ops.pem",
                "--key",
                "admin-ops.key",
            ]
            .chunks(2)
            .flat_map(|p| [p[0].to_string(), pki.join(p[1]).display().to_string()])
            .collect();
        }
        self.admin.clone()
    }

    /// `orbitctl` against registry node `node` (0-2), as the admin.
    fn orbitctl(&mut self, node: usize, args: &[&str]) -> (i32, String, String) {
        let tls = self.admin_tls();
        orbitctl_at(NODES[node].parse().unwrap(), &tls, args)
    }

    fn leader(&mut self) -> u64 {
        for node in 0..3 {
            let (code, out, _) = self.orbitctl(node, &["cluster", "status", "--json"]);
            if code == 0 {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                if let Some(l) = v["leader_id"].as_u64().filter(|l| *l > 0) {
                    return l;
                }
            }
        }
        0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in [
                "registry-a",
                "registry-b",
                "registry-c",
                "edge-a",
                "edge-b",
                "edge-c",
            ] {
                show_tail(s, &self.logs(s), 40);
            }
        }
        let _ = self.command(&["down", "-v", "--remove-orphans"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_bytes() -> [u8; 24] {
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b
}

/// The phones, on this host's address on the WAN network.
fn phones() -> Phones {
    Phones::new(
        IpAddr::V4(HOST),
        EDGES.iter().map(|e| IpAddr::V4(*e)).collect(),
    )
}

#[test]
fn the_compose_cluster_parks_retrieves_drains_and_survives_its_leader() {
    require_sipp();
    let image = image();
    let mut cluster = Cluster::up(image);
    for e in ["edge-a", "edge-b", "edge-c"] {
        cluster.wait_log(e, "registry lease held", Duration::from_secs(90));
    }

    // Parked at A, retrieved at C: media through both relays, both ways.
    let phones = phones();
    let (phone, media, r) = phones.park(0, "1001", "1002");
    phones.retrieve(2, "3001", "701", &media, r);
    let p = phone.wait();
    assert!(p.ok(), "parked party: {}", p.errors);

    // Site A's edge is stopped (SIGTERM: it drains): its parked call moves to another edge,
    // is re-INVITEd to that edge's relay, and is retrieved from there.
    let (phone, media, _) = phones.park(0, "1003", "1004");
    cluster.compose(&["stop", "edge-a"]);
    let moved = phone.wait_log("moved_port", Duration::from_secs(10));
    let to = if cluster.logs("edge-b").contains("parked call taken over") {
        1
    } else {
        2
    };
    let moved = phones.relay_at(to, moved);
    phones.retrieve(2, "3001", "701", &media, moved);
    let p = phone.wait();
    assert!(p.ok(), "moved parked party: {}\n{}", p.errors, p.logs);
    assert!(
        cluster.logs("edge-a").contains("drained"),
        "{}",
        cluster.logs("edge-a")
    );

    // A lot with a short timer (an operator's change), a park at site B, and the leader's
    // container killed just before the deadline: the recall rings the parker once.
    let (code, _, err) = cluster.orbitctl(
        0,
        &[
            "lots",
            "set",
            "700",
            "--tenant",
            "orbit.local",
            "--slots",
            "701-720",
            "--parking-secs",
            "4",
            "--recall-ring-secs",
            "10",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let leader = cluster.leader();
    assert!(leader > 0, "a leader");
    let b = phones.site(1);
    let parker_media = RtpPeer::bind_on(IpAddr::V4(HOST));
    let parker_phone = b
        .phone("2002", "uas_recall_answer.xml", &parker_media)
        .args(["-m", "2", "-d", "500"])
        .spawn();
    let alice_media = RtpPeer::bind_on(IpAddr::V4(HOST));
    let alice = b
        .phone("2001", "uas_answer.xml", &alice_media)
        .args(["-d", "0"])
        .spawn();
    let bob = Sipp::new(b, "uac_park.xml")
        .args(["-s", "2001", "-au", "2002", "-ap", "pw2002", "-d", "300"])
        .key("caller", "2002")
        .key(
            "rtpport",
            &RtpPeer::bind_on(IpAddr::V4(HOST)).port().to_string(),
        )
        .key("park_to", "700")
        .key("refer_params", "")
        .spawn();
    let parked_at = Instant::now();
    let r = bob.wait();
    assert!(r.ok(), "parker: {}", r.errors);
    let until_kill = Duration::from_millis(3_300).saturating_sub(parked_at.elapsed());
    std::thread::sleep(until_kill);
    let victim = ["registry-a", "registry-b", "registry-c"][leader as usize - 1];
    let killed_at = Instant::now();
    let id = cluster.compose(&["ps", "-q", victim]);
    run(Command::new("docker").args(["kill", id.trim()]));
    let p = parker_phone.wait();
    assert!(p.ok(), "the parker's phone: {}", p.errors);
    assert_eq!(p.logs.matches("recall_slot=701").count(), 1, "{}", p.logs);
    assert!(
        killed_at.duration_since(parked_at) < Duration::from_secs(4),
        "killed before the deadline"
    );
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    assert_eq!(cluster.logs("edge-b").matches("recall ringing").count(), 1);
}
