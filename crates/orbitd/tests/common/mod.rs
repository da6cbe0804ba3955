//! Test harness: start the real `orbitd` on free loopback ports from a config file, drive it
//! with SIPp, and send/count real RTP.

#![allow(dead_code)]

pub mod docker;
pub mod parking;
pub mod sites;
#[allow(unused_imports)] // not every test crate parks
pub use parking::*;
pub use sites::*;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `orbitctl <args>` against `endpoint` (a registry node or an edge's admin listener) with
/// `tls` flags: (exit code, stdout, stderr).
pub fn orbitctl_at(endpoint: SocketAddr, tls: &[String], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args(["--endpoint", &endpoint.to_string(), "--timeout", "5"])
        .args(tls)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A UDP port whose TCP twin is free too.
///
/// Taken in turn from a block of this process's own ([`free_range`]), below the ephemeral
/// range: a port the kernel hands out (bind to port 0) is one that any process's next outgoing
/// connection may take before the daemon binds it, which more gRPC clients made likelier.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<(u16, u16)>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap();
    for _ in 0..1000 {
        let (p, end) = match *next {
            Some((p, end)) if p <= end => (p, end),
            _ => free_range(100),
        };
        *next = Some((p + 1, end));
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port");
}

/// A block of `n` consecutive free UDP ports below the ephemeral range, reserved for this
/// test process: free when looked at is not enough, since a daemon binds its relay ports only
/// as calls come, and tests run in parallel processes. Each 100-port block of the range is
/// locked (`flock` on a file per block, held until the process exits), so no two test
/// processes are handed overlapping ranges.
pub fn free_range(n: u16) -> (u16, u16) {
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("orbit-test-port-blocks");
    std::fs::create_dir_all(&dir).expect("a directory for port block locks");
    let blocks = n.div_ceil(100);
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    let mut first = (seed % 200) as u16;
    for _ in 0..200 {
        let start = 10_000 + first * 100;
        if first + blocks <= 200 {
            let mut locks = vec![];
            for b in first..first + blocks {
                let f = std::fs::File::create(dir.join(b.to_string())).expect("a lock file");
                if f.try_lock().is_err() {
                    break;
                }
                locks.push(f);
            }
            if locks.len() == blocks as usize
                && (start..start + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
            {
                HELD.lock().unwrap().extend(locks);
                return (start, start + n - 1);
            }
        }
        first = (first + 1) % 200;
    }
    panic!("no free port range");
}

pub fn require_sipp() {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "SIPp is required for end-to-end tests: run ./scripts/test.sh, which installs it"
    );
}

pub struct Daemon {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub tls: SocketAddr,
    pub rtp: (u16, u16),
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
    /// The address phones (SIPp) run at to reach it: loopback, or this host's address on a
    /// container network.
    pub local: std::net::IpAddr,
}

pub struct Options {
    pub extra: String,
    pub algorithms: &'static str,
    pub nonce_ttl: u64,
    pub media_timeout: u64,
    pub rtp_ports: u16,
    /// Run the daemon inside this network namespace (see [`NetNs`]).
    pub netns: Option<String>,
    /// Listen for TLS with a certificate made for the test.
    pub tls: bool,
    /// TOML appended after the extensions (parking lots: `[[edge.tenant.lots]]`).
    pub tenant: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra: String::new(),
            algorithms: r#"["MD5", "SHA-256"]"#,
            nonce_ttl: 300,
            media_timeout: 60,
            rtp_ports: 200,
            netns: None,
            tls: false,
            tenant: String::new(),
        }
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(Options::default())
    }

    pub fn start_with(o: Options) -> Daemon {
        require_sipp();
        // A fresh namespace has every port free; the host's may not.
        let (port, tls_port, rtp) = if o.netns.is_some() {
            (5060, 5061, (20000, 20000 + o.rtp_ports - 1))
        } else {
            (free_port(), free_port(), free_range(o.rtp_ports))
        };
        let dir = std::env::temp_dir().join(format!("orbit-test-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = if o.tls {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
            orbit_registry::dev_pki::write_private(
                &dir.join("key.pem"),
                &ck.key_pair.serialize_pem(),
            )
            .unwrap();
            format!(
                "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            )
        } else {
            String::new()
        };
        let mut exts = String::new();
        for n in 1001..=1010 {
            exts.push_str(&format!("\"{n}\" = {{ password = \"pw{n}\" }}\n"));
        }
        let cfg = format!(
            r#"[edge]
site = "test"
drain_secs = 1
[edge.sip]
listen = "127.0.0.1:{port}"
t1_ms = 500
{tls}
[edge.media]
ip = "127.0.0.1"
port_min = {}
port_max = {}
timeout_secs = {}
idle_close_secs = 1
[edge.auth]
algorithms = {}
nonce_ttl_secs = {}
{}
[edge.tenant]
domain = "orbit.local"
any_host = true
[edge.tenant.extensions]
{exts}
{}
"#,
            rtp.0, rtp.1, o.media_timeout, o.algorithms, o.nonce_ttl, o.extra, o.tenant
        );
        let path = dir.join("orbit.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = match &o.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_orbitd")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_orbitd")),
        };
        let mut child = cmd
            .args(["edge", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orbitd");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("edge started") {
                    let _ = ready_tx.send(());
                }
                if std::env::var_os("ORBIT_TEST_LOG").is_some() {
                    eprintln!("orbitd: {line}");
                }
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("orbitd did not start");
        Daemon {
            child: Some(child),
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: SocketAddr::from(([127, 0, 0, 1], tls_port)),
            rtp,
            dir,
            log,
            local: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// An edge this test did not start (in a container): SIP at `sip`, relay ports `rtp`,
    /// reached by phones at `local`; their logs under `dir`.
    pub fn elsewhere(
        sip: SocketAddr,
        rtp: (u16, u16),
        dir: PathBuf,
        local: std::net::IpAddr,
    ) -> Daemon {
        std::fs::create_dir_all(&dir).unwrap();
        Daemon {
            child: None,
            sip,
            tls: SocketAddr::new(sip.ip(), sip.port() + 1),
            rtp,
            dir,
            log: Default::default(),
            local,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGINT, as Ctrl-C; waits for the process to exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), "INT");
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("orbitd did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ports of the RTP range that cannot be bound (held by the daemon); empty when it
    /// holds none.
    pub fn rtp_ports_held(&self) -> Vec<u16> {
        (self.rtp.0..=self.rtp.1)
            .filter(|p| UdpSocket::bind(("127.0.0.1", *p)).is_err())
            .collect()
    }

    /// Register `ext` from local port `port` (so that calls to `ext` reach that port).
    pub fn register(&self, ext: &str, port: u16) {
        let r = Sipp::new(self, "register.xml")
            .args(["-s", ext, "-au", ext, "-ap", &format!("pw{ext}")])
            .key("expires", "3600")
            .port(port)
            .run();
        assert!(r.ok(), "register {ext} failed:\n{}", r.errors);
    }

    /// A phone for `ext`: registered here from a free port, where SIPp will run `scenario`
    /// with its media at `media`.
    pub fn phone(&self, ext: &str, scenario: &str, media: &RtpPeer) -> Sipp {
        let port = free_port();
        self.register(ext, port);
        Sipp::new(self, scenario)
            .key("rtpport", &media.port().to_string())
            .port(port)
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One SIPp run against the daemon.
pub struct Sipp {
    cmd: Command,
    logs: PathBuf,
    errs: PathBuf,
    pub port: u16,
    extra_keys: Vec<(String, String)>,
    /// The daemon's address, and whether the scenario authenticates requests to
    /// `sip:[service]@[remote_ip]:[remote_port]` (its digest `uri` must then name that URI,
    /// not SIPp's default `sip:remote_ip:remote_port`: the edge checks it against the
    /// Request-URI).
    target: String,
    auth_to_service: bool,
}

pub struct SippResult {
    pub status: ExitStatus,
    pub logs: String,
    pub errors: String,
}

impl SippResult {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

pub(crate) static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Sipp {
    pub fn new(d: &Daemon, scenario_name: &str) -> Sipp {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let logs = d.dir.join(format!("sipp-{n}.log"));
        let errs = d.dir.join(format!("sipp-{n}.err"));
        let mut cmd = Command::new("sipp");
        cmd.arg(d.sip.to_string())
            .arg("-sf")
            .arg(scenario(scenario_name))
            .arg("-i")
            .arg(d.local.to_string())
            .args(["-m", "1", "-timeout", "30s", "-timeout_error"])
            .args(["-trace_logs", "-log_file"])
            .arg(&logs)
            .args(["-trace_err", "-error_file"])
            .arg(&errs)
            .args(["-nostdin", "-buff_size", "4194304"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let text = std::fs::read_to_string(scenario(scenario_name)).unwrap_or_default();
        Sipp {
            cmd,
            logs,
            errs,
            port: 0,
            extra_keys: vec![],
            target: d.sip.to_string(),
            auth_to_service: text.contains("[authentication]")
                && text.contains("sip:[service]@[remote_ip]:[remote_port] SIP/2.0"),
        }
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Self {
        let a: Vec<std::ffi::OsString> = a.into_iter().map(|x| x.as_ref().to_owned()).collect();
        if self.auth_to_service {
            if let Some(i) = a.iter().position(|x| x == "-s") {
                if let Some(service) = a.get(i + 1).and_then(|s| s.to_str()) {
                    let uri = format!("{service}@{}", self.target);
                    self.cmd.args(["-auth_uri", &uri]);
                }
            }
        }
        self.cmd.args(a);
        self
    }

    pub fn key(mut self, k: &str, v: &str) -> Self {
        self.cmd.args(["-key", k, v]);
        self.extra_keys.push((k.into(), v.into()));
        self
    }

    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self.cmd.args(["-p", &p.to_string()]);
        self
    }

    pub fn spawn(mut self) -> RunningSipp {
        if self.port == 0 {
            let p = free_port();
            self = self.port(p);
        }
        let child = self.cmd.spawn().expect("start sipp");
        RunningSipp {
            child,
            logs: self.logs,
            errs: self.errs,
            port: self.port,
        }
    }

    pub fn run(self) -> SippResult {
        self.spawn().wait()
    }
}

pub struct RunningSipp {
    child: Child,
    logs: PathBuf,
    errs: PathBuf,
    pub port: u16,
}

impl RunningSipp {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.logs).unwrap_or_default()
    }

    /// Wait until the scenario logged `key=value` and return the value.
    pub fn wait_log(&self, key: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        let pat = format!("{key}=");
        loop {
            let l = self.logs();
            if let Some(i) = l.find(&pat) {
                let rest = &l[i + pat.len()..];
                return rest
                    .split(|c: char| c.is_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_string();
            }
            assert!(
                t0.elapsed() < timeout,
                "sipp did not log {key} in {timeout:?}; errors:\n{}",
                std::fs::read_to_string(&self.errs).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait(mut self) -> SippResult {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        SippResult {
            status,
            logs: std::fs::read_to_string(&self.logs).unwrap_or_default(),
            errors: std::fs::read_to_string(&self.errs).unwrap_or_default(),
        }
    }
}

/// A party's media endpoint: sends RTP (PCMU, 20 ms) and counts what arrives.
pub struct RtpPeer {
    pub sock: UdpSocket,
}

impl RtpPeer {
    pub fn bind() -> RtpPeer {
        Self::bind_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// At `ip` (this host's address on a container network).
    pub fn bind_on(ip: std::net::IpAddr) -> RtpPeer {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        RtpPeer { sock }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// The same socket, for another thread to listen on.
    pub fn clone_socket(&self) -> RtpPeer {
        RtpPeer {
            sock: self.sock.try_clone().unwrap(),
        }
    }

    /// Send `n` RTP packets at 20 ms intervals to `to`, while counting packets received from
    /// `expect_from`; keeps receiving `linger` after the last send.
    pub fn exchange(&self, to: SocketAddr, n: u16, ssrc: u32, linger: Duration) -> RtpCount {
        let mut count = RtpCount::default();
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        let mut sent = 0u16;
        loop {
            let now = start.elapsed();
            if sent < n && now >= Duration::from_millis(20) * sent as u32 {
                let mut p = vec![0u8; 172];
                p[0] = 0x80;
                p[1] = 0;
                p[2..4].copy_from_slice(&sent.to_be_bytes());
                p[4..8].copy_from_slice(&(sent as u32 * 160).to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                self.sock.send_to(&p, to).unwrap();
                sent += 1;
            }
            if sent == n && now > Duration::from_millis(20) * n as u32 + linger {
                break;
            }
            self.sock
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            if let Ok((len, from)) = self.sock.recv_from(&mut buf) {
                if len >= 12 && buf[0] >> 6 == 2 {
                    count.packets += 1;
                    count.from.insert(from);
                    count
                        .ssrcs
                        .insert(u32::from_be_bytes(buf[8..12].try_into().unwrap()));
                }
            }
        }
        count.sent = sent as u64;
        count
    }
}

impl RtpPeer {
    /// Receive for `d`: every RTP packet with when it came and from where.
    pub fn listen(&self, d: Duration) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
        let mut out = vec![];
        let mut buf = [0u8; 2048];
        let end = Instant::now() + d;
        self.sock
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        while Instant::now() < end {
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                out.push((Instant::now(), from, buf[..n].to_vec()));
            }
        }
        out
    }

    /// Press `digits` as RFC 4733 telephone-events (payload type 101) sent to `to`: per digit
    /// three packets, then three end packets, one timestamp, 60 ms apart between digits.
    pub fn press(&self, to: SocketAddr, digits: &str) {
        for (i, d) in digits.chars().enumerate() {
            let code = match d {
                '0'..='9' => d as u8 - b'0',
                '*' => 10,
                '#' => 11,
                _ => panic!("not a DTMF digit: {d}"),
            };
            let ts = 100_000u32 + i as u32 * 1600;
            for k in 0..6u16 {
                let end = k >= 3;
                let mut p = vec![0u8; 16];
                p[0] = 0x80;
                p[1] = 101 | if k == 0 { 0x80 } else { 0 };
                p[2..4].copy_from_slice(&(i as u16 * 6 + k).to_be_bytes());
                p[4..8].copy_from_slice(&ts.to_be_bytes());
                p[8..12].copy_from_slice(&0xD7u32.to_be_bytes());
                p[12] = code;
                p[13] = if end { 0x80 | 10 } else { 10 };
                p[14..16].copy_from_slice(&(160 * (k + 1)).to_be_bytes());
                self.sock.send_to(&p, to).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Throw away what is queued.
    pub fn drain(&self) {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while self.sock.recv_from(&mut buf).is_ok() {}
        self.sock.set_nonblocking(false).unwrap();
    }
}

#[derive(Debug, Default)]
pub struct RtpCount {
    pub sent: u64,
    pub packets: u64,
    pub from: std::collections::HashSet<SocketAddr>,
    pub ssrcs: std::collections::HashSet<u32>,
}

/// A network namespace with only `lo`, so that messages naming foreign addresses (RFC 4475 uses
/// 192.0.2.x) cannot leave the machine. Needs root, as CI and the dev machines have.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("orbit-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "`ip netns add` failed: this test needs root and iproute2"
        );
        let ok = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "bringing up lo in {name}");
        NetNs { name }
    }

    /// A UDP socket bound inside the namespace (setns on a scratch thread: the socket keeps
    /// its namespace, the rest of the process stays where it is).
    pub fn udp(&self) -> UdpSocket {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).expect("open netns");
            // SAFETY: plain syscall on a valid fd; affects only this thread.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            UdpSocket::bind("127.0.0.1:0").expect("bind in netns")
        })
        .join()
        .unwrap()
    }

    /// Whether the namespace has any interface but lo.
    pub fn interfaces(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A call 1001 → 1002 through the daemon with both SIPp ends answering media on test sockets;
/// `n` RTP packets go each way through the relay while the call is up.
pub struct RelayedCall {
    /// What the caller and the callee received.
    pub caller_got: RtpCount,
    pub callee_got: RtpCount,
    /// The relay addresses each party was told to send to.
    pub caller_relay: SocketAddr,
    pub callee_relay: SocketAddr,
    pub uac: SippResult,
    pub uas: SippResult,
}

pub fn relayed_call(d: &Daemon, uac_args: &[&str], n: u16) -> RelayedCall {
    let callee_port = free_port();
    d.register("1002", callee_port);
    let callee_media = RtpPeer::bind();
    let caller_media = RtpPeer::bind();
    let uas = Sipp::new(d, "uas_answer.xml")
        .key("rtpport", &callee_media.port().to_string())
        .port(callee_port)
        .spawn();
    let uac = Sipp::new(d, "uac_call.xml")
        .args(["-s", "1002", "-au", "1001", "-ap", "pw1001"])
        .args(uac_args)
        .key("caller", "1001")
        .key("rtpport", &caller_media.port().to_string())
        .spawn();
    let port = |s: String| SocketAddr::from(([127, 0, 0, 1], s.parse::<u16>().expect("port")));
    let caller_relay = port(uac.wait_log("relay_port", Duration::from_secs(10)));
    let callee_relay = port(uas.wait_log("relay_port", Duration::from_secs(10)));
    let linger = Duration::from_millis(300);
    let (caller_got, callee_got) = std::thread::scope(|s| {
        let a = s.spawn(|| caller_media.exchange(caller_relay, n, 0xA, linger));
        let b = s.spawn(|| callee_media.exchange(callee_relay, n, 0xB, linger));
        (a.join().unwrap(), b.join().unwrap())
    });
    RelayedCall {
        caller_got,
        callee_got,
        caller_relay,
        callee_relay,
        uac: uac.wait(),
        uas: uas.wait(),
    }
}

/// Two parties bridged through the relay(s): each sends `n` packets to the relay port it talks
/// to (SSRC 0xA and 0xB), and each must get all of the other's and nothing else (no music, no
/// third party).
pub fn assert_bridged(
    a: (&RtpPeer, SocketAddr),
    b: (&RtpPeer, SocketAddr),
    n: u16,
    linger: Duration,
) {
    a.0.drain();
    b.0.drain();
    let (got_a, got_b) = std::thread::scope(|s| {
        let x = s.spawn(|| a.0.exchange(a.1, n, 0xA, linger));
        let y = s.spawn(|| b.0.exchange(b.1, n, 0xB, linger));
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(got_a.packets as u16, n, "first party got {got_a:?}");
    assert_eq!(
        got_a.ssrcs.iter().copied().collect::<Vec<_>>(),
        vec![0xB],
        "the first party hears only the second"
    );
    assert_eq!(got_b.packets as u16, n, "second party got {got_b:?}");
    assert_eq!(got_b.ssrcs.iter().copied().collect::<Vec<_>>(), vec![0xA]);
}
