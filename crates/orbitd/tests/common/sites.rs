//! Three sites as three `orbitd run` processes (registry voter + edge each), and more edges
//! added to a site as processes of their own: the way a real deployment runs them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, free_range, require_sipp, Daemon, COUNTER};

/// The processes of a multi-site cluster. Process `i < 3` is site `i`'s registry node and
/// first edge; later ones are edges [added](Sites::add_edge) to a site.
pub struct Sites {
    procs: Vec<Option<Child>>,
    /// Per process, a handle for SIPp and RTP (no process of its own).
    pub site: Vec<Daemon>,
    pub grpc: Vec<SocketAddr>,
    /// Each of the first three processes' metrics listener (`[telemetry] metrics_listen`).
    pub metrics: Vec<SocketAddr>,
    configs: Vec<PathBuf>,
    logs: Vec<Arc<Mutex<String>>>,
    /// Per process, its edge's identity (`site-a`, `site-a/edge-2`).
    names: Vec<String>,
    /// Per process, its edge's admin listener (calls, registrations, health).
    pub admin: Vec<SocketAddr>,
    dir: PathBuf,
    /// The admin certificate's flags for `orbitd registry ...` (the registry speaks mTLS).
    pub admin_tls: Vec<String>,
    /// The CA that signed the cluster's certificates (a test issues more: a reader's).
    pub ca: orbit_registry::dev_pki::DevCa,
    /// Where the certificates are.
    pub pki: PathBuf,
    /// The `[edge.tenant]` TOML every edge appends, and their lease.
    tenant: String,
    lease_secs: u64,
}

pub const SITE_NAMES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// The registry's bearer tokens for scripts: a reader's and an admin's.
pub const READ_TOKEN: &str = "a-reading-script-token-0123456789";
pub const ADMIN_TOKEN: &str = "an-admin-script-token-9876543210";

/// `[[registry.tokens]]` for [`READ_TOKEN`] and [`ADMIN_TOKEN`], kept as their SHA-256.
fn tokens_toml() -> String {
    use sha2::Digest;
    let hash = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    format!(
        "[[registry.tokens]]\nname = \"reports\"\nrole = \"read\"\nsha256 = \"{}\"\n[[registry.tokens]]\nname = \"deployer\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        hash(READ_TOKEN),
        hash(ADMIN_TOKEN)
    )
}

/// The extensions every edge knows: 1001-1010, 2001-2010, 3001-3010.
fn extensions() -> String {
    let mut exts = String::new();
    for base in [1000, 2000, 3000] {
        for n in base + 1..=base + 10 {
            exts.push_str(&format!("\"{n}\" = {{ password = \"pw{n}\" }}\n"));
        }
    }
    exts
}

/// A free port `p` with `p + 1` free too (SIP and TLS), both taken (ports come in turn).
fn free_pair() -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if free_port() == p + 1 {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A `[... .tls]` table's lines.
fn tls_table(f: orbit_registry::TlsFiles) -> String {
    format!(
        "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        f.ca.display(),
        f.cert.display(),
        f.key.display()
    )
}

impl Sites {
    /// `tenant` is TOML appended to each site's tenant (parking lots).
    pub fn start(tenant: &str) -> Sites {
        Self::start_with(tenant, 15)
    }

    /// With edge leases of `lease_secs`.
    pub fn start_with(tenant: &str, lease_secs: u64) -> Sites {
        Self::start_opts(tenant, lease_secs, "")
    }

    /// With `telemetry` (TOML) added to each process's `[telemetry]` table.
    pub fn start_opts(tenant: &str, lease_secs: u64, telemetry: &str) -> Sites {
        require_sipp();
        let dir = std::env::temp_dir().join(format!(
            "orbit-sites-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let grpc: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        // The control plane's mutual TLS, as a deployment has it: one CA, a certificate per
        // registry node and per edge, and an admin's for the command line.
        let pki = dir.join("pki");
        let ca = orbit_registry::dev_pki::DevCa::new().unwrap();
        let admin = ca
            .write(
                &pki,
                "admin",
                &orbit_registry::Caller::Admin("test".into()),
                &[],
            )
            .unwrap();
        let admin_tls = vec![
            "--ca".into(),
            admin.ca.display().to_string(),
            "--cert".into(),
            admin.cert.display().to_string(),
            "--key".into(),
            admin.key.display().to_string(),
        ];
        let metrics = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let mut s = Sites {
            procs: vec![],
            site: vec![],
            grpc,
            metrics,
            configs: vec![],
            logs: vec![],
            names: vec![],
            admin: vec![],
            dir,
            admin_tls,
            ca,
            pki,
            tenant: tenant.to_string(),
            lease_secs,
        };
        let sip: Vec<u16> = (0..3).map(|_| free_pair()).collect();
        for i in 0..3 {
            let node = orbit_registry::Caller::Node(i as u64 + 1);
            let node_tls = tls_table(
                s.ca.write(
                    &s.pki,
                    &format!("registry-{}", i + 1),
                    &node,
                    &["127.0.0.1"],
                )
                .unwrap(),
            );
            // The first three edges name each other in config; edges added later are found
            // through their leases.
            let peers: String = (0..3)
                .filter(|j| *j != i)
                .map(|j| {
                    format!(
                        "[[edge.trunk.peers]]\nsite = \"{}\"\naddr = \"127.0.0.1:{}\"\n",
                        SITE_NAMES[j], sip[j]
                    )
                })
                .collect();
            let registry = format!(
                "[registry]\nid = {id}\nlisten = \"{listen}\"\ndata_dir = \"{data}\"\n[registry.tls]\n{node_tls}{tokens}\n[telemetry]\nmetrics_listen = \"{metrics}\"\n{telemetry}\n",
                id = i + 1,
                listen = s.grpc[i],
                data = s.dir.join(format!("registry-{}", i + 1)).display(),
                tokens = tokens_toml(),
                metrics = s.metrics[i],
            );
            s.prepare(SITE_NAMES[i], None, sip[i], &registry, &peers, "");
        }
        for i in 0..3 {
            s.spawn(i);
        }
        let members: Vec<String> = (0..3).map(|i| format!("{}={}", i + 1, s.grpc[i])).collect();
        let st = s
            .registry_cli(&["init", "--at", &s.grpc[0].to_string()])
            .args(&members)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "registry init");
        for i in 0..3 {
            s.wait_log(i, "committed event=lease", Duration::from_secs(20));
        }
        s
    }

    /// Write the config of an edge process (`registry`: its `[registry]` tables, if it runs a
    /// node too); its index.
    fn prepare(
        &mut self,
        site: &str,
        name: Option<&str>,
        sip: u16,
        registry: &str,
        peers: &str,
        suffix: &str,
    ) -> usize {
        let i = self.procs.len();
        let id = match name {
            Some(n) => format!("{site}/{n}"),
            None => site.to_string(),
        };
        let file = format!("{}{suffix}", id.replace('/', "-"));
        let edge = orbit_registry::Caller::Edge(id.clone());
        // For this host too: it serves its admin listener with it.
        let edge_tls = tls_table(
            self.ca
                .write(&self.pki, &file, &edge, &["127.0.0.1"])
                .unwrap(),
        );
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // This edge's own node first: the nearest.
        let mut nodes: Vec<String> = self.grpc.iter().map(|g| format!("\"{g}\"")).collect();
        if i < 3 {
            nodes.swap(0, i);
        }
        let rtp = free_range(200);
        let cfg = format!(
            r#"{registry}
[edge]
site = "{site}"
{name}
state_dir = "{state}"
[edge.sip]
listen = "127.0.0.1:{sip}"
[edge.media]
ip = "127.0.0.1"
port_min = {rmin}
port_max = {rmax}
idle_close_secs = 1
[edge.auth]
algorithms = ["MD5", "SHA-256"]
[edge.registry]
nodes = [{nodes}]
lease_secs = {lease_secs}
[edge.registry.tls]
{edge_tls}
[edge.admin]
listen = "{admin}"
[edge.trunk]
secret = "multi-site-test-trunk-secret"
{peers}
[edge.tenant]
domain = "orbit.local"
any_host = true
[edge.tenant.extensions]
{exts}
{tenant}
"#,
            name = name.map_or(String::new(), |n| format!("name = \"{n}\"")),
            state = self.dir.join(format!("edge-{file}")).display(),
            rmin = rtp.0,
            rmax = rtp.1,
            nodes = nodes.join(", "),
            lease_secs = self.lease_secs,
            exts = extensions(),
            tenant = self.tenant,
        );
        let path = self.dir.join(format!("{file}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let d = self.dir.join(&file);
        std::fs::create_dir_all(&d).unwrap();
        self.site.push(Daemon {
            child: None,
            sip: SocketAddr::from(([127, 0, 0, 1], sip)),
            tls: SocketAddr::from(([127, 0, 0, 1], sip + 1)),
            rtp,
            dir: d,
            log: Arc::new(Mutex::new(String::new())),
            local: std::net::Ipv4Addr::LOCALHOST.into(),
        });
        self.configs.push(path);
        self.logs.push(Arc::new(Mutex::new(String::new())));
        self.names.push(id);
        self.admin.push(admin);
        self.procs.push(None);
        i
    }

    /// Another edge at site `site` (0-2) named `name`: an edge-only process of its own, with
    /// its own certificate, found by the other edges through its lease; its index, once it
    /// holds its lease.
    pub fn add_edge(&mut self, site: usize, name: &str) -> usize {
        let i = self.prepare(SITE_NAMES[site], Some(name), free_pair(), "", "", "");
        self.spawn(i);
        self.wait_log(i, "committed event=lease", Duration::from_secs(20));
        i
    }

    /// A second process with the identity of process `i`'s edge (its own certificate for it,
    /// SIP port and state dir, as a second deployment configured by mistake would have): its
    /// index. It is started, not waited for.
    pub fn twin_edge(&mut self, i: usize) -> usize {
        let id = self.names[i].clone();
        let (site, name) = match id.split_once('/') {
            Some((s, n)) => (s.to_string(), Some(n.to_string())),
            None => (id.clone(), None),
        };
        let j = self.prepare(&site, name.as_deref(), free_pair(), "", "", "twin");
        self.names[j] = format!("{id} (twin)");
        self.spawn(j);
        j
    }

    /// The TLS flags of a reader's certificate (`spiffe://orbit/read/<name>`), issued now.
    pub fn reader_tls(&self, name: &str) -> Vec<String> {
        let f = self
            .ca
            .write(
                &self.pki,
                name,
                &orbit_registry::Caller::Reader(name.into()),
                &[],
            )
            .unwrap();
        [("--ca", &f.ca), ("--cert", &f.cert), ("--key", &f.key)]
            .iter()
            .flat_map(|(k, v)| [k.to_string(), v.display().to_string()])
            .collect()
    }

    /// `orbitd registry <args>` with the admin's certificate.
    pub fn registry_cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orbitd"));
        c.arg("registry").args(args).args(&self.admin_tls);
        c
    }

    /// Start (or restart) process `i`.
    pub fn spawn(&mut self, i: usize) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_orbitd"))
            .args(["run", "--config"])
            .arg(&self.configs[i])
            // Pickup's debug lines tell a test when another site's lamp watch has arrived; the
            // orbit port's, when a command was committed.
            .env(
                "RUST_LOG",
                std::env::var("ORBIT_TEST_RUST_LOG").unwrap_or_else(|_| {
                    "info,openraft=warn,orbit_edge::pickup=debug,orbit_edge::services::orbit_port=debug"
                        .into()
                }),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orbitd");
        let stderr = child.stderr.take().unwrap();
        let log = self.logs[i].clone();
        log.lock().unwrap().clear();
        let name = self.names[i].clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("ORBIT_TEST_LOG").is_some() {
                    eprintln!("{name}: {line}");
                }
                let mut g = log.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        self.procs[i] = Some(child);
        self.wait_log(i, "edge started", Duration::from_secs(20));
    }

    pub fn log(&self, i: usize) -> String {
        self.logs[i].lock().unwrap().clone()
    }

    pub fn wait_log(&self, i: usize, pat: &str, timeout: Duration) {
        let t0 = Instant::now();
        while !self.log(i).contains(pat) {
            assert!(
                t0.elapsed() < timeout,
                "{} did not log {pat:?} in {timeout:?}:\n{}",
                self.names[i],
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send process `i` signal `sig` ("TERM", "STOP", ...).
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.procs[i].as_ref().expect("running").id();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Wait up to `timeout` for process `i` to exit by itself: its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            let c = self.procs[i].as_mut().expect("running");
            if let Some(st) = c.try_wait().unwrap() {
                self.procs[i] = None;
                return st;
            }
            assert!(
                t0.elapsed() < timeout,
                "{} still running after {timeout:?}:\n{}",
                self.names[i],
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL process `i` (registry node and edge together).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
