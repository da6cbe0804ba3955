//! Orbit as deployed, one site per host: each host runs the site's registry voter and its
//! edge as two processes (`orbitd registry run`, `orbitd edge`), with mutual TLS between them
//! all and the trunk between the edges; and the faults a process can suffer (killed, paused,
//! restarted).
//!
//! The harness asks the registry who leads, to aim its faults; the checker never asks it
//! anything.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orbit_registry::dev_pki::DevCa;
use orbit_registry::Caller;
use thiserror::Error;

use crate::net::Net;

/// Every host uses the same ports: each has an address of its own.
pub const SIP: u16 = 5060;
pub const GRPC: u16 = 7000;
const ADMIN: u16 = 7100;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("certificates: {0}")]
    Pki(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("`orbitd registry init` failed: {0}")]
    Init(String),
    #[error("{0:?} never got ready (its log: {1})")]
    NotReady(Proc, String),
}

/// One of a site's two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Registry(usize),
    Edge(usize),
}

/// A registry node's view of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The leader's site index, if one is known.
    pub leader: Option<usize>,
    /// The last log index applied.
    pub applied: u64,
    pub term: u64,
}

/// The site processes of one run.
pub struct Cluster<'n> {
    net: &'n Net,
    orbitd: PathBuf,
    dir: PathBuf,
    configs: Vec<PathBuf>,
    procs: Vec<Option<Child>>,
    admin_tls: Vec<String>,
    /// How far each host's wall clock is off, in ms, whole seconds (libfaketime; the
    /// monotonic clock is left alone).
    skew_ms: Vec<i64>,
    /// Each registry's data directory, a tmpfs of its own (a disk that can be filled).
    disks: Vec<PathBuf>,
}

/// The size of each registry's disk: far more than a run writes.
const DISK: &str = "256m";

/// libfaketime, from Debian's `faketime`, the thread-safe build.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

impl<'n> Cluster<'n> {
    /// Start a site on every host of `net`: `tenant` is TOML added to each site's
    /// `[edge.tenant]` (lots); `extensions` those every edge knows.
    pub fn start(
        net: &'n Net,
        orbitd: &Path,
        dir: &Path,
        tenant: &str,
        extensions: &[String],
        lease_secs: u64,
        skew_ms: &[i64],
    ) -> Result<Cluster<'n>, ClusterError> {
        let io = |what: &Path| {
            let w = what.display().to_string();
            move |e| ClusterError::Io(w, e)
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let pki = dir.join("pki");
        let ca = DevCa::new().map_err(|e| ClusterError::Pki(e.to_string()))?;
        let pki_err = |e: orbit_registry::dev_pki::PkiError| ClusterError::Pki(e.to_string());
        let admin = ca
            .write(&pki, "admin", &Caller::Admin("chaos".into()), &[])
            .map_err(pki_err)?;
        let admin_tls = [
            ("--ca", &admin.ca),
            ("--cert", &admin.cert),
            ("--key", &admin.key),
        ]
        .iter()
        .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
        .collect();
        let exts: String = extensions
            .iter()
            .map(|e| format!("\"{e}\" = {{ password = \"pw{e}\" }}\n"))
            .collect();
        let n = net.hosts.len();
        // Registries first, then edges: `Proc`'s index.
        let mut configs = vec![];
        let mut edge_configs = vec![];
        for (i, h) in net.hosts.iter().enumerate() {
            let addr = h.addr.to_string();
            let tls = |name: &str, who: &Caller| -> Result<String, ClusterError> {
                let f = ca.write(&pki, name, who, &[&addr]).map_err(pki_err)?;
                Ok(format!(
                    "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    f.ca.display(),
                    f.cert.display(),
                    f.key.display()
                ))
            };
            let node_tls = tls(&format!("registry-{}", i + 1), &Caller::Node(i as u64 + 1))?;
            let edge_tls = tls(&h.name, &Caller::Edge(h.name.clone()))?;
            // This site's own node first: the nearest.
            let nodes: Vec<String> = std::iter::once(i)
                .chain((0..n).filter(|&j| j != i))
                .map(|j| format!("\"{}:{GRPC}\"", net.hosts[j].addr))
                .collect();
            let peers: String = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    format!(
                        "[[edge.trunk.peers]]\nsite = \"{}\"\naddr = \"{}:{SIP}\"\n",
                        net.hosts[j].name, net.hosts[j].addr
                    )
                })
                .collect();
            let registry = format!(
                r#"[registry]
id = {id}
listen = "{addr}:{GRPC}"
data_dir = "{data}"
[registry.tls]
{node_tls}
"#,
                id = i + 1,
                data = dir.join(format!("registry-{}", i + 1)).display(),
            );
            let file = dir.join(format!("registry-{}.toml", i + 1));
            std::fs::write(&file, registry).map_err(io(&file))?;
            configs.push(file);
            let edge = format!(
                r#"[edge]
site = "{site}"
state_dir = "{state}"
[edge.sip]
listen = "{addr}:{SIP}"
[edge.media]
ip = "{addr}"
port_min = 20000
port_max = 20999
[edge.auth]
algorithms = ["MD5"]
[edge.registry]
nodes = [{nodes}]
lease_secs = {lease_secs}
[edge.registry.tls]
{edge_tls}
[edge.admin]
listen = "{addr}:{ADMIN}"
[edge.trunk]
secret = "chaos-tests-trunk-secret-0123456789"
{peers}
[edge.tenant]
domain = "orbit.local"
any_host = true
[edge.tenant.extensions]
{exts}
{tenant}
"#,
                site = h.name,
                state = dir.join(format!("edge-{}", h.name)).display(),
                nodes = nodes.join(", "),
            );
            let file = dir.join(format!("{}.toml", h.name));
            std::fs::write(&file, edge).map_err(io(&file))?;
            edge_configs.push(file);
        }
        configs.extend(edge_configs);
        let mut disks = vec![];
        for i in 0..n {
            let d = dir.join(format!("registry-{}", i + 1));
            std::fs::create_dir_all(&d).map_err(io(&d))?;
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={DISK}"), "tmpfs"])
                .arg(&d)
                .status()
                .map_err(io(&d))?;
            if !st.success() {
                return Err(ClusterError::Io(
                    d.display().to_string(),
                    std::io::Error::other("mounting a tmpfs failed"),
                ));
            }
            disks.push(d);
        }
        let mut c = Cluster {
            net,
            orbitd: orbitd.to_path_buf(),
            dir: dir.to_path_buf(),
            configs,
            procs: (0..2 * n).map(|_| None).collect(),
            admin_tls,
            skew_ms: (0..n)
                .map(|i| skew_ms.get(i).copied().unwrap_or(0))
                .collect(),
            disks,
        };
        for i in 0..n {
            c.spawn(Proc::Registry(i))?;
        }
        let members: Vec<String> = net
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{}={}:{GRPC}", i + 1, h.addr))
            .collect();
        let at = format!("{}:{GRPC}", net.hosts[0].addr);
        // The nodes take a moment to listen.
        let t0 = Instant::now();
        loop {
            let out = c
                .registry_cli(0, &["init", "--at", &at])
                .args(&members)
                .output()
                .map_err(io(&c.orbitd))?;
            if out.status.success() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(15) {
                return Err(ClusterError::Init(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for i in 0..n {
            c.spawn(Proc::Edge(i))?;
        }
        for i in 0..n {
            let p = Proc::Edge(i);
            c.wait_log(p, "registry lease held", Duration::from_secs(30))
                .map_err(|log| ClusterError::NotReady(p, log))?;
        }
        Ok(c)
    }

    /// `orbitd registry <args>` run at host `i`, as the admin.
    fn registry_cli(&self, i: usize, args: &[&str]) -> Command {
        let mut c = self.net.command(i, &self.orbitd.display().to_string());
        c.arg("registry").args(args).args(&self.admin_tls);
        c
    }

    /// Hand the registry's leadership to site `to`'s node, as an operator does
    /// (`orbitctl cluster transfer`), asked of the leader at site `leader`. Whether it was
    /// done.
    pub fn transfer(&self, leader: usize, to: usize) -> bool {
        let orbitctl = self.orbitd.with_file_name("orbitctl");
        let addr = format!("{}:{GRPC}", self.net.hosts[leader].addr);
        let mut c = self.net.command(leader, &orbitctl.display().to_string());
        c.args(["--endpoint", &addr]).args(&self.admin_tls);
        c.args(["cluster", "transfer", &(to + 1).to_string()]);
        c.output().is_ok_and(|o| o.status.success())
    }

    fn index(&self, p: Proc) -> usize {
        match p {
            Proc::Registry(i) => i,
            Proc::Edge(i) => self.net.hosts.len() + i,
        }
    }

    fn host(p: Proc) -> usize {
        match p {
            Proc::Registry(i) | Proc::Edge(i) => i,
        }
    }

    /// The log of process `p` (all its runs, one after the other).
    pub fn log_path(&self, p: Proc) -> PathBuf {
        let name = match p {
            Proc::Registry(i) => format!("registry-{}", i + 1),
            Proc::Edge(i) => self.net.hosts[i].name.clone(),
        };
        self.dir.join(format!("{name}.log"))
    }

    pub fn log(&self, p: Proc) -> String {
        std::fs::read_to_string(self.log_path(p)).unwrap_or_default()
    }

    /// Start site `i`'s edge again and wait until it holds its lease.
    pub fn restart_edge(&mut self, i: usize) -> Result<(), ClusterError> {
        let p = Proc::Edge(i);
        let held = "registry lease held";
        let before = self.log(p).matches(held).count();
        self.spawn(p)?;
        let t0 = Instant::now();
        while self.log(p).matches(held).count() == before {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(ClusterError::NotReady(p, self.log(p)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Wait until process `p`'s log has `text`; the log if it never does.
    fn wait_log(&self, p: Proc, text: &str, within: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.log(p).contains(text) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.log(p))
    }

    /// Start (or start again) process `p`, its log appended to.
    pub fn spawn(&mut self, p: Proc) -> Result<(), ClusterError> {
        let i = self.index(p);
        let log_path = self.log_path(p);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ClusterError::Io(log_path.display().to_string(), e))?;
        let how: &[&str] = match p {
            Proc::Registry(_) => &["registry", "run", "--config"],
            Proc::Edge(_) => &["edge", "--config"],
        };
        let mut cmd = self
            .net
            .command(Self::host(p), &self.orbitd.display().to_string());
        let skew = self.skew_ms[Self::host(p)];
        if skew != 0 {
            // Only the wall clock: tokio's timers run on the monotonic one.
            cmd.env("LD_PRELOAD", FAKETIME)
                .env("FAKETIME", format!("{:+}", skew / 1000))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd
            .args(how)
            .arg(&self.configs[i])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| ClusterError::Io(self.orbitd.display().to_string(), e))?;
        self.procs[i] = Some(child);
        Ok(())
    }

    fn pid(&self, p: Proc) -> Option<u32> {
        self.procs[self.index(p)].as_ref().map(|c| c.id())
    }

    fn signal(&self, p: Proc, sig: i32) {
        if let Some(pid) = self.pid(p) {
            // SAFETY: a signal to a child of ours, still unreaped (so its pid is not reused).
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// `kill -9` process `p`: nothing flushed, nothing said.
    pub fn kill(&mut self, p: Proc) {
        self.signal(p, libc::SIGKILL);
        let i = self.index(p);
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.wait();
        }
    }

    /// Fill site `i`'s registry disk to the last byte: its next writes fail.
    pub fn fill_disk(&self, i: usize) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = File::create(self.disks[i].join("filler"))?;
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        Ok(())
    }

    /// Make room on site `i`'s registry disk again.
    pub fn free_disk(&self, i: usize) -> std::io::Result<()> {
        std::fs::remove_file(self.disks[i].join("filler"))
    }

    /// Wait up to `within` for process `p` to end by itself, as it is meant to (a registry
    /// whose disk filled): its exit status, and it is no crash.
    pub fn wait_exit(&mut self, p: Proc, within: Duration) -> Option<String> {
        let i = self.index(p);
        let t0 = Instant::now();
        while t0.elapsed() < within {
            let c = self.procs[i].as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.procs[i] = None;
                return Some(st.to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGSTOP: alive, holding its sockets, answering nothing.
    pub fn pause(&self, p: Proc) {
        self.signal(p, libc::SIGSTOP);
    }

    pub fn resume(&self, p: Proc) {
        self.signal(p, libc::SIGCONT);
    }

    pub fn is_running(&self, p: Proc) -> bool {
        self.procs[self.index(p)].is_some()
    }

    /// Every process of the run.
    pub fn all(&self) -> Vec<Proc> {
        let n = self.net.hosts.len();
        (0..n)
            .map(Proc::Registry)
            .chain((0..n).map(Proc::Edge))
            .collect()
    }

    /// Processes that ended by themselves (not killed by the schedule): crashes.
    pub fn crashed(&mut self) -> Vec<(Proc, String)> {
        let mut out = vec![];
        for p in self.all() {
            let i = self.index(p);
            if let Some(c) = &mut self.procs[i] {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((p, status.to_string()));
                }
            }
        }
        out
    }

    /// The registry as site `at`'s node sees it (`orbitd registry status`), if it answers.
    pub fn status(&self, at: usize) -> Option<Status> {
        let addr = format!("{}:{GRPC}", self.net.hosts[at].addr);
        let out = self
            .registry_cli(at, &["status", "--at", &addr])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(Status {
            leader: field("leader:")
                .filter(|&id| id > 0)
                .map(|id| id as usize - 1),
            applied: field("applied:")?,
            term: field("term:")?,
        })
    }

    /// The registry leader (site index) as site `at` sees it.
    pub fn leader(&self, at: usize) -> Option<usize> {
        self.status(at)?.leader
    }

    /// The leader as any running registry node sees it.
    pub fn find_leader(&self) -> Option<usize> {
        (0..self.net.hosts.len())
            .filter(|&i| self.is_running(Proc::Registry(i)))
            .find_map(|i| self.leader(i))
    }

    /// The most resident memory process `p` has had, in KiB (`VmHWM`).
    pub fn rss_kib(&self, p: Proc) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(p)?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        for p in self.all() {
            self.resume(p);
            self.kill(p);
        }
        for d in &self.disks {
            let _ = Command::new("umount").arg("-l").arg(d).status();
        }
    }
}
