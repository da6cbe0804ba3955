//! A UDP flood against the real daemon must not starve the rest of its SIP loop: while one
//! source keeps the UDP socket readable at full speed for two seconds, an OPTIONS over TCP is
//! still answered at once and a timer-driven retransmission still leaves on time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, free_range};

/// `orbitd edge` with a config of its own (no SIPp needed).
struct Edge {
    child: Child,
    sip: SocketAddr,
    dir: PathBuf,
}

impl Edge {
    fn start() -> Edge {
        let port = free_port();
        let rtp = free_range(10);
        let dir = std::env::temp_dir().join(format!("orbit-flood-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The per-source limit is lifted so that every flood datagram costs a full parse and
        // an answer, as a flood from many addresses would.
        let cfg = format!(
            r#"[edge]
site = "flood"
[edge.sip]
listen = "127.0.0.1:{port}"
t1_ms = 500
[edge.media]
ip = "127.0.0.1"
port_min = {}
port_max = {}
[edge.auth]
algorithms = ["MD5"]
[edge.limits]
requests_per_sec = 100000000
burst = 100000000
[edge.tenant]
domain = "orbit.local"
any_host = true
[edge.tenant.extensions]
"1001" = {{ password = "pw1001" }}
"1002" = {{ password = "pw1002" }}
"#,
            rtp.0, rtp.1
        );
        let path = dir.join("orbit.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_orbitd"))
            .args(["edge", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orbitd");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("edge started") {
                    let _ = ready_tx.send(());
                }
                if std::env::var_os("ORBIT_TEST_LOG").is_some() {
                    eprintln!("orbitd: {line}");
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("orbitd did not start");
        Edge {
            child,
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Send an OPTIONS over `tcp` and wait for its response; returns the status line and how long
/// the answer took.
fn tcp_options(tcp: &mut TcpStream, n: u32) -> (String, Duration) {
    let req = format!("OPTIONS sip:orbit.local SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKtcp{n}\r\nMax-Forwards: 70\r\nFrom: <sip:1001@orbit.local>;tag=t\r\nTo: <sip:orbit.local>\r\nCall-ID: tcp-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let t0 = Instant::now();
    tcp.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    let k = k.trim().to_ascii_lowercase();
                    (k == "content-length" || k == "l").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.lines().next().unwrap_or("").to_string();
                return (status, t0.elapsed());
            }
        }
        let k = tcp.read(&mut chunk).expect("read over TCP");
        assert!(k > 0, "TCP connection closed");
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// Flood `to` with OPTIONS from 127.0.0.2 (4096 different transactions, round and round) until
/// `stop` or `max` has passed; returns how many datagrams were sent, and for how long.
fn flood(to: SocketAddr, stop: Arc<AtomicBool>, max: Duration) -> (u64, Duration) {
    // Niced, so that on a busy machine the CPU the flooder cannot get goes to the edge and
    // the probes, not the other way round: it still sends far faster than the edge reads.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    let me = s.local_addr().unwrap();
    let msgs: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            format!("OPTIONS sip:orbit.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKflood{i}\r\nMax-Forwards: 70\r\nFrom: <sip:flood@orbit.local>;tag=f\r\nTo: <sip:orbit.local>\r\nCall-ID: flood-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
                .into_bytes()
        })
        .collect();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < max {
        for _ in 0..256 {
            i = (i + 1) % msgs.len();
            if s.send_to(&msgs[i], to).is_ok() {
                sent += 1;
            }
        }
    }
    (sent, t0.elapsed())
}

/// Datagrams the kernel dropped because the loopback UDP socket on `port` was full.
fn udp_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&local.as_str()))
        .and_then(|f| f.last()?.parse().ok())
        .expect("the edge's socket in /proc/net/udp")
}

#[test]
fn udp_flood_starves_neither_tcp_nor_timers() {
    let edge = Edge::start();
    let mut tcp = TcpStream::connect(edge.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first after the start also waits for the edge to finish starting.
    let (status, _) = tcp_options(&mut tcp, 1);
    assert!(status.starts_with("SIP/2.0 200"), "{status}");
    let (_, before) = tcp_options(&mut tcp, 2);

    // An INVITE without credentials gets a 407, which the edge retransmits (timer G: T1, then
    // 2·T1 after that) until the ACK that never comes: 500 ms and 1500 ms after the first.
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = phone.local_addr().unwrap();
    let invite = format!("INVITE sip:1001@orbit.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfloodinv;rport\r\nMax-Forwards: 70\r\nFrom: <sip:1002@orbit.local>;tag=p\r\nTo: <sip:1001@orbit.local>\r\nCall-ID: flood-invite\r\nCSeq: 1 INVITE\r\nContact: <sip:1002@{me}>\r\nContent-Length: 0\r\n\r\n");
    phone.send_to(invite.as_bytes(), edge.sip).unwrap();
    phone
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    // The 407s that arrive before `until`; with `one`, only the first.
    let mut got_407 = |until: Instant, one: bool| -> Vec<Instant> {
        let mut at = vec![];
        while Instant::now() < until && (!one || at.is_empty()) {
            if let Ok((n, _)) = phone.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 407") {
                    at.push(Instant::now());
                }
            }
        }
        at
    };
    let first = *got_407(Instant::now() + Duration::from_secs(2), true)
        .first()
        .expect("a 407 for the INVITE");

    let drops = udp_drops(edge.sip.port());
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (to, stop) = (edge.sip, stop.clone());
        std::thread::spawn(move || flood(to, stop, Duration::from_secs(3)))
    };
    let window = first + Duration::from_millis(2200);
    // Over TCP during the flood: an OPTIONS every 150 ms, each timed.
    let prober = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut worst = Duration::ZERO;
        let mut n = 3;
        while Instant::now() + Duration::from_millis(150) < window {
            let (status, took) = tcp_options(&mut tcp, n);
            assert!(status.starts_with("SIP/2.0 200"), "{status}");
            worst = worst.max(took);
            n += 1;
            std::thread::sleep(Duration::from_millis(150));
        }
        (worst, n - 3)
    });
    let retransmits = got_407(window, false);
    let (worst_tcp, probes) = prober.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (sent, flooded) = flooder.join().unwrap();
    let dropped = udp_drops(edge.sip.port()) - drops;
    let late: Vec<i128> = retransmits
        .iter()
        .zip([500i128, 1500])
        .map(|(t, due)| t.duration_since(first).as_millis() as i128 - due)
        .collect();
    eprintln!(
        "flood: {sent} datagrams in {flooded:?}, {dropped} overflowed the edge's socket; TCP \
         OPTIONS: {before:?} before, worst of {probes} during {worst_tcp:?}; 407 \
         retransmissions late by {late:?} ms"
    );
    // Else the edge kept up, its socket was not always readable, and this shows nothing.
    assert!(dropped > 0, "the flood never outran the edge");
    let mut starved = vec![];
    if worst_tcp >= Duration::from_millis(200) || probes < 5 {
        starved.push(format!(
            "TCP: worst OPTIONS {worst_tcp:?} ({probes} answered during the flood)"
        ));
    }
    if late.len() != 2 || late.iter().any(|l| l.abs() > 100) {
        starved.push(format!(
            "timers: the two 407 retransmissions due during the flood came {late:?} ms late"
        ));
    }
    assert!(starved.is_empty(), "starved by the flood: {starved:?}");
}
