//! Orbit in containers, for the tests that run it so (compose, the Kubernetes pod specs): the
//! image built from the repository's Dockerfile, on bases made on this machine
//! (`deploy/docker/base-images.sh`: no image registry is reachable here), and `docker` run
//! with its output checked; and SIPp phones on this host that call the edges in them.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;

/// The image the container tests run.
pub const IMAGE: &str = "orbit:test";

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Run `cmd`; its stdout, or a panic with what it said.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last `n` lines of `log`, under `name`, on stderr: what a failing test shows of a
/// container.
pub fn show_tail(name: &str, log: &str, n: usize) {
    let lines: Vec<&str> = log.lines().collect();
    eprintln!(
        "--- {name}\n{}",
        lines[lines.len().saturating_sub(n)..].join("\n")
    );
}

/// `docker <args>`.
pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// [`IMAGE`], built from the Dockerfile now (docker's layer cache makes that quick when
/// nothing changed); one build at a time among the test processes.
pub fn image() -> &'static str {
    let lock = std::fs::File::create(std::env::temp_dir().join("orbit-test-image.lock")).unwrap();
    // Held until `lock` is dropped (closed) at the end of this function.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let args = run(Command::new("bash").arg(repo().join("deploy/docker/base-images.sh")));
    let mut build = Command::new("docker");
    build.arg("build").arg("-q");
    build.args(args.split_whitespace());
    build.args(["-t", IMAGE]).arg(repo());
    eprintln!("building {IMAGE} (minutes on a fresh machine: a release build)");
    run(&mut build);
    IMAGE
}

/// SIPp phones on this host, at `host` (the containers' network's gateway), calling edges in
/// containers at `edges` (SIP on 5060, relays on 20000-20999, the tenant of `orbitd dev`).
pub struct Phones {
    pub host: IpAddr,
    pub edges: Vec<IpAddr>,
    /// Each edge as SIPp reaches it; the phones' logs are in its directory, which goes with it.
    sites: Vec<Daemon>,
}

impl Phones {
    pub fn new(host: IpAddr, edges: Vec<IpAddr>) -> Phones {
        let sites = edges
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let dir = std::env::temp_dir().join(format!(
                    "orbit-containers-{}-{e}-phones-{i}",
                    std::process::id()
                ));
                Daemon::elsewhere(SocketAddr::new(*e, 5060), (20000, 20999), dir, host)
            })
            .collect();
        Phones { host, edges, sites }
    }

    /// Site `i`'s edge as the phones reach it.
    pub fn site(&self, i: usize) -> &Daemon {
        &self.sites[i]
    }

    /// A relay port as SIPp logs it, at site `i`'s edge.
    pub fn relay_at(&self, i: usize, port: String) -> SocketAddr {
        SocketAddr::new(self.edges[i], port.parse().expect("port"))
    }

    /// `parked` at site `i` answers `parker`'s call there and is parked in 700: its phone
    /// (it takes a re-INVITE when its call moves), its media and the relay it talks to.
    pub fn park(&self, i: usize, parked: &str, parker: &str) -> (RunningSipp, RtpPeer, SocketAddr) {
        parked_at(self.site(i), parked, parker)
    }

    /// `who` at site `i` dials `slot` and talks to the parked party (`media`, heard at
    /// `parked_relay`) through both relays, both ways.
    pub fn retrieve(
        &self,
        i: usize,
        who: &str,
        slot: &str,
        media: &RtpPeer,
        parked_relay: SocketAddr,
    ) {
        let s = self.site(i);
        let own = RtpPeer::bind_on(self.host);
        let call = Sipp::new(s, "uac_call.xml")
            .args([
                "-s",
                slot,
                "-au",
                who,
                "-ap",
                &format!("pw{who}"),
                "-d",
                "1500",
            ])
            .key("caller", who)
            .key("rtpport", &own.port().to_string())
            .spawn();
        let relay = self.relay_at(i, call.wait_log("relay_port", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(100));
        assert_bridged(
            (media, parked_relay),
            (&own, relay),
            30,
            Duration::from_millis(300),
        );
        let r = call.wait();
        assert!(
            r.ok(),
            "retrieve of {slot} by {who} at site {i}: {}",
            r.errors
        );
    }
}
