//! `orbit-bench relay`: RTP relay packets/s on one core and added latency, against a plain
//! UDP forwarding loop measured in the same run (the machine's ceiling).
//! `orbit-bench music`: CPU of music on hold for many parked calls at once, against a bare
//! paced send loop of the same packets measured in the same run.
//! `orbit-bench registry`: commit latency of a three-voter registry (fsync on every append),
//! against this disk's fsync latency measured in the same run; and the time from a leader's
//! stop to the next committed park.
//! `orbit-bench otlp-sink`: a trace receiver that counts spans, for `bench/run.sh observe`.
//!
//! Layout, as the anchor's `udpfwd/run.sh`: the forwarder (plain loop, or the relay on a
//! single-threaded tokio runtime) pinned to CPU 1; generator and sink pinned to CPU 0.
//! Throughput: the generator blasts 172-byte packets; the sink counts what arrives.
//! Latency: a paced phase (default 5,000 packets/s) stamps each packet with its send time.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod otlp_sink;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Relay packet rate and latency vs a plain UDP forward loop.
    Relay {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 172)]
        size: usize,
        /// Packets/s of the latency phase.
        #[arg(long, default_value_t = 5000)]
        paced_rate: u64,
    },
    /// Registry commit latency vs the disk's fsync, and failover time.
    Registry {
        /// Sequential proposals to time.
        #[arg(long, default_value_t = 2000)]
        commits: usize,
        /// Leader stops to time.
        #[arg(long, default_value_t = 5)]
        failovers: usize,
        /// Where the nodes keep their files (the disk being measured).
        #[arg(long, default_value = "/var/tmp")]
        dir: std::path::PathBuf,
    },
    /// An OTLP/gRPC trace receiver that counts spans (for `bench/run.sh observe`).
    OtlpSink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Music on hold to many parked calls: the player's CPU vs a bare paced send loop.
    Music {
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// Sinks that count what arrives, on their own threads, until `stop`.
fn sinks(n: usize, stop: &Arc<AtomicBool>) -> (Vec<SocketAddr>, Arc<std::sync::atomic::AtomicU64>) {
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut addrs = vec![];
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
        addrs.push(s.local_addr().unwrap());
        let (stop, count) = (stop.clone(), count.clone());
        // Drain every 5 ms rather than block per packet: a phone's NIC does not wake a thread
        // of ours per packet, and a blocked receiver on loopback would bill each wake-up to
        // the sender being measured.
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                while s.recv_from(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    (addrs, count)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p / 100.0) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// fdatasync of a 4 KiB write, `n` times, in `dir`.
fn fsync_latency(dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    let path = dir.join(format!("orbit-fsync-{}", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let buf = [7u8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        // SAFETY: a valid open file descriptor.
        unsafe { libc::fdatasync(f.as_raw_fd()) };
        out.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(out)
}

/// One redb write transaction with one ~300-byte row, committed with redb's default
/// (immediate, fsync) durability: what each registry node pays per log append.
fn redb_latency(dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let path = dir.join(format!("orbit-redb-{}.redb", std::process::id()));
    let db = redb::Database::create(&path)?;
    let row = [7u8; 300];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let tx = db.begin_write()?;
        {
            let mut table = tx.open_table(T)?;
            table.insert(i as u64, &row[..])?;
        }
        tx.commit()?;
        out.push(t.elapsed());
    }
    drop(db);
    std::fs::remove_file(&path)?;
    Ok(out)
}

fn registry(commits: usize, failovers: usize, dir: std::path::PathBuf) -> anyhow::Result<()> {
    use orbit_registry::{Node, NodeConfig};
    use orbit_state::{Command, LotConfig, SlotChoice};
    use std::collections::BTreeMap;
    let root = dir.join(format!("orbit-bench-registry-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    println!(
        "registry benchmark: 3 voters in one process over gRPC on loopback, files in {}",
        root.display()
    );
    let mut fsync = fsync_latency(&root, commits.min(1000))?;
    let mut redb_commit = redb_latency(&root, commits.min(1000))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let lot = LotConfig {
        tenant: "bench".into(),
        park_ext: "700".into(),
        first_slot: 1_000,
        last_slot: 999_999,
        parking_ms: 3_600_000,
        recall_ring_ms: 20_000,
        fallback: None,
        choice: SlotChoice::FirstFree,
    };
    let park = |n: usize| Command::Park {
        lot: lot.key(),
        slot: None,
        call: bench_call(n),
    };
    type Measured = (Vec<Duration>, Vec<Duration>, f64, Vec<u64>, Vec<u64>);
    let result: anyhow::Result<Measured> = rt.block_on(async {
        let addrs: BTreeMap<u64, std::net::SocketAddr> = (1..=3)
            .map(|i| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                (i, l.local_addr().unwrap())
            })
            .collect();
        let cfg = |i: u64| NodeConfig::new(i, addrs[&i], root.join(format!("n{i}")));
        let mut nodes = BTreeMap::new();
        for i in 1..=3 {
            nodes.insert(i, Node::start(cfg(i)).await?);
        }
        nodes[&1].initialize(&addrs).await?;
        let leader = |nodes: &BTreeMap<u64, Node>| -> Option<u64> {
            nodes.values().find_map(|n| {
                let m = n.raft.metrics().borrow().clone();
                (m.state.is_leader()).then_some(n.id)
            })
        };
        let t0 = Instant::now();
        while leader(&nodes).is_none() {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(10), "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let l = leader(&nodes).unwrap();
        // Every command measured must take effect: a refused one is a cheaper entry.
        let effect =
            |c: orbit_registry::Committed| c.outcome.map_err(|r| anyhow::anyhow!("refused: {r:?}"));
        effect(nodes[&l].propose(Command::SetLot(lot.clone())).await?)?;
        let mut lat = Vec::with_capacity(commits);
        for n in 0..commits {
            let t = Instant::now();
            effect(nodes[&l].propose(park(n)).await?)?;
            lat.push(t.elapsed());
        }
        // Failover: stop the leader, time until a park commits through a survivor, restart it.
        let mut fo = vec![];
        for k in 0..failovers {
            let l = leader(&nodes).unwrap();
            let stopped = nodes.remove(&l).unwrap();
            let t = Instant::now();
            stopped.shutdown().await;
            let via = *nodes.keys().next().unwrap();
            loop {
                if nodes[&via].propose(park(commits + k)).await.is_ok() {
                    break;
                }
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(20),
                    "no commit after failover"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            fo.push(t.elapsed());
            nodes.insert(l, Node::start(cfg(l)).await?);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // Throughput with many proposals in flight (as many edges' calls are): the leader
        // batches the proposals that queue up into one entry (one fsync, one replication).
        let l = leader(&nodes).unwrap();
        let batch = nodes[&l].batcher();
        let in_flight = 64;
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..in_flight {
            let (batch, key) = (batch.clone(), lot.key());
            tasks.spawn(async move {
                for k in 0..commits / in_flight {
                    let cmd = Command::Park {
                        lot: key.clone(),
                        slot: None,
                        call: bench_call(1_000_000 + w * 100_000 + k),
                    };
                    batch
                        .write(cmd)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .1
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let per_s = (commits / in_flight * in_flight) as f64 / t.elapsed().as_secs_f64();

        // Recall lateness: 300 parks with deadlines spread over 3 s; the leader stops in the
        // middle. Lateness is the leader's stamp on the Expire minus the deadline.
        let short = LotConfig {
            park_ext: "600".into(),
            first_slot: 1_000_000,
            last_slot: 1_999_999,
            parking_ms: 2_000,
            ..lot.clone()
        };
        let l = leader(&nodes).unwrap();
        effect(nodes[&l].propose(Command::SetLot(short.clone())).await?)?;
        let started = Instant::now();
        let mut stop_at_ms = 0;
        for n in 0..300 {
            let cmd = Command::Park {
                lot: short.key(),
                slot: None,
                call: bench_call(3_000_000 + n),
            };
            let via = *nodes.keys().next().unwrap();
            let _ = nodes[&via].propose(cmd).await;
            if n == 250 {
                // Half the deadlines are still to come: stop the leader now.
                let l = leader(&nodes).unwrap();
                let stopped = nodes.remove(&l).unwrap();
                stop_at_ms = wall_now();
                stopped.shutdown().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while started.elapsed() < Duration::from_secs(7) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let survivor = nodes.values().next().unwrap();
        let (mut steady, mut across) = (vec![], vec![]);
        let applied = survivor.state.events.lock().unwrap().clone();
        for ev in applied.iter().flat_map(|a| a.done.iter().map(|(_, ev)| ev)) {
            if let orbit_state::Event::Expired(p) = ev {
                if let orbit_state::Phase::Recalling { since, .. } = p.phase {
                    let late = since.saturating_sub(p.deadline);
                    if p.deadline + 400 < stop_at_ms {
                        steady.push(late);
                    } else if p.deadline >= stop_at_ms {
                        across.push(late);
                    }
                }
            }
        }
        for (_, n) in nodes {
            n.shutdown().await;
        }
        Ok((lat, fo, per_s, steady, across))
    });
    std::fs::remove_dir_all(&root).ok();
    let (mut lat, mut fo, per_s, mut steady, mut across) = result?;
    let (f50, f99) = (pct(&mut fsync, 50.0), pct(&mut fsync, 99.0));
    let (c50, c99) = (pct(&mut lat, 50.0), pct(&mut lat, 99.0));
    println!(
        "disk fsync (4 KiB + fdatasync, anchor): p50 {:6.2} ms  p99 {:6.2} ms",
        ms(f50),
        ms(f99)
    );
    println!(
        "redb commit, one row (per-node append):   p50 {:6.2} ms  p99 {:6.2} ms",
        ms(pct(&mut redb_commit, 50.0)),
        ms(pct(&mut redb_commit, 99.0))
    );
    println!(
        "registry commit (3 voters, sequential):   p50 {:6.2} ms  p99 {:6.2} ms  ratio p50 {:.2}x fsync",
        ms(c50),
        ms(c99),
        c50.as_secs_f64() / f50.as_secs_f64().max(1e-9)
    );
    if !fo.is_empty() {
        let max = *fo.iter().max().unwrap();
        println!(
            "leader stop -> next committed park ({} runs): p50 {:6.0} ms  max {:6.0} ms",
            fo.len(),
            ms(pct(&mut fo, 50.0)),
            ms(max)
        );
    }
    println!(
        "registry commits with 64 in flight:      {per_s:8.0} /s ({:.2} ms per commit amortised)",
        1000.0 / per_s
    );
    let show = |name: &str, v: &mut Vec<u64>| {
        v.sort_unstable();
        let at = |p: f64| {
            v.get(((v.len() as f64 * p / 100.0) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "recall lateness, {name:27} p50 {:5} ms  p99 {:5} ms  max {:5} ms  (n={})",
            at(50.0),
            at(99.0),
            v.last().copied().unwrap_or(0),
            v.len()
        );
    };
    show("steady leader:", &mut steady);
    show("due after the leader stops:", &mut across);
    Ok(())
}

fn bench_call(n: usize) -> orbit_state::CallInfo {
    orbit_state::CallInfo {
        caller_uri: format!("sip:{n}@bench"),
        caller_display: None,
        parker: "1".into(),
        edge: "bench".into(),
        call_id: format!("c{n}"),
        local_tag: "l".into(),
        remote_tag: "r".into(),
        codec: None,
        trace: None,
    }
}

/// Milliseconds since the Unix epoch (for stamps the bench proposes itself).
fn wall_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn music(calls: usize, seconds: u64) -> anyhow::Result<()> {
    use orbit_media::audio::{builtin_music, linear_to_ulaw, Codec};
    use orbit_media::{Leg, PortPool, Session};
    println!("music benchmark: {calls} parked calls, built-in music in PCMU, {seconds} s");
    let stop = Arc::new(AtomicBool::new(false));
    let (addrs, received) = sinks(4, &stop);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _enter = rt.enter();
    let first = 30000u16;
    let pool = PortPool::new("127.0.0.1".parse()?, first, first + (calls as u16) * 4 + 8)
        .on_runtime(rt.handle().clone());
    let clip = Arc::new(builtin_music());
    let mut sessions = Vec::with_capacity(calls);
    for i in 0..calls {
        let s = Session::open(&pool)?;
        s.set_remote(Leg::A, Some(addrs[i % addrs.len()]), None);
        s.play(Leg::A, clip.clone(), Codec::Pcmu, 0, true);
        sessions.push(s);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu0, sent0) = pool.player_usage();
    let r0 = received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, sent1) = pool.player_usage();
    let wall = t0.elapsed().as_secs_f64();
    let r1 = received.load(Ordering::Relaxed);
    drop(sessions);
    let player_cpu = (cpu1 - cpu0).as_secs_f64() / wall;
    let pps = (sent1 - sent0) as f64 / wall;
    let rx = (r1 - r0) as f64 / wall;

    // Anchor: the same packets, pre-built, sent by a bare loop paced at 20 ms from `calls`
    // sockets of its own.
    let socks: Vec<UdpSocket> = (0..calls)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let pkt = vec![0x80u8; 172];
    let bare = std::thread::spawn(move || {
        let start = Instant::now();
        let c0 = cpu_time();
        let mut tick = 0u32;
        while start.elapsed() < Duration::from_secs(seconds) {
            tick += 1;
            let due = start + Duration::from_millis(20) * tick;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            for (i, s) in socks.iter().enumerate() {
                let _ = s.send_to(&pkt, addrs[i % addrs.len()]);
            }
        }
        (cpu_time() - c0).as_secs_f64() / start.elapsed().as_secs_f64()
    });
    let bare_cpu = bare.join().unwrap();
    stop.store(true, Ordering::Relaxed);

    // What encoding per call would add: G.711-encode one second of audio for every call.
    let samples: Vec<i16> = (0..8000)
        .map(|i| ((i * 37) % 20000) as i16 - 10000)
        .collect();
    let c0 = cpu_time();
    let mut sink = 0u64;
    for _ in 0..calls {
        for s in &samples {
            sink = sink.wrapping_add(linear_to_ulaw(*s) as u64);
        }
    }
    let encode_cpu = (cpu_time() - c0).as_secs_f64();
    std::hint::black_box(sink);

    println!(
        "player (encoded once, shared): {:5.1}% of one core, {:>7.0} packets/s sent, {:>7.0} received ({:.1} per call/s)",
        player_cpu * 100.0,
        pps,
        rx,
        pps / calls as f64
    );
    println!(
        "bare paced send loop (anchor): {:5.1}% of one core, same packet rate   ratio {:.2}x",
        bare_cpu * 100.0,
        player_cpu / bare_cpu.max(1e-9)
    );
    println!(
        "encoding per call instead would add {:5.1}% of one core (G.711 of {calls} streams)",
        encode_cpu * 100.0
    );
    Ok(())
}

fn pin(cpu: usize) {
    // SAFETY: plain syscall with a valid, zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % num_cpus(), &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Online CPUs of the machine (not of this thread's affinity mask, which `pin` narrows).
fn num_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize
}

fn cpu_time() -> Duration {
    // Thread CPU time of the caller.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct SinkResult {
    packets: u64,
    window: Duration,
    latencies_us: Vec<u64>,
}

/// Count packets arriving at `sock` until `stop` and 300 ms of silence; record latency from
/// the send time stamped at offset 12 (nanoseconds since `epoch`).
fn sink(sock: UdpSocket, epoch: Instant, stop: Arc<AtomicBool>) -> SinkResult {
    pin(0);
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (mut n, mut first, mut last) = (0u64, None, Instant::now());
    let mut lat = Vec::new();
    loop {
        match sock.recv(&mut buf) {
            Ok(len) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                n += 1;
                if len >= 20 {
                    let sent = u64::from_le_bytes(buf[12..20].try_into().unwrap());
                    if sent != 0 {
                        let at = now.duration_since(epoch).as_nanos() as u64;
                        lat.push(at.saturating_sub(sent) / 1000);
                    }
                }
            }
            Err(_) => {
                if stop.load(Ordering::Relaxed) && last.elapsed() > Duration::from_millis(300) {
                    break;
                }
            }
        }
    }
    SinkResult {
        packets: n,
        window: first.map(|f| last.duration_since(f)).unwrap_or_default(),
        latencies_us: lat,
    }
}

/// Send `size`-byte RTP-like packets to `to` for `secs`; `rate` 0 = as fast as possible.
fn generate(to: SocketAddr, size: usize, secs: u64, rate: u64, epoch: Instant, stamp: bool) -> u64 {
    pin(0);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    let mut p = vec![0u8; size];
    p[0] = 0x80;
    let t0 = Instant::now();
    let mut n = 0u64;
    if rate == 0 {
        // Blast in batches of 32 with sendmmsg, as the anchor's generator does.
        use std::os::fd::AsRawFd;
        let mut bufs = vec![p.clone(); 32];
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; pointers stay alive for the loop.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        while t0.elapsed() < Duration::from_secs(secs) {
            // SAFETY: valid fd and message array.
            let r = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), 32, 0) };
            if r > 0 {
                n += r as u64;
            }
        }
        return n;
    }
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(step) = 1_000_000_000u64.checked_div(rate) {
            let due = t0 + Duration::from_nanos(n * step);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        if stamp {
            let now = Instant::now().duration_since(epoch).as_nanos() as u64;
            p[12..20].copy_from_slice(&now.to_le_bytes());
        }
        if s.send(&p).is_ok() {
            n += 1;
        }
    }
    n
}

struct Run {
    sent: u64,
    pps: f64,
    fwd_cpu: Duration,
    p50_us: u64,
    p99_us: u64,
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// One phase against a forwarder started by `start_fwd(sink_addr) -> (listen addr, stop fn)`.
fn phase(
    fwd_in: SocketAddr,
    sink_sock: UdpSocket,
    size: usize,
    secs: u64,
    rate: u64,
    epoch: Instant,
) -> (u64, SinkResult) {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let sink_t = std::thread::spawn(move || sink(sink_sock, epoch, st));
    let sent = std::thread::spawn(move || generate(fwd_in, size, secs, rate, epoch, rate > 0))
        .join()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    (sent, sink_t.join().unwrap())
}

fn plain_loop(size: usize, secs: u64, rate: u64) -> Run {
    let epoch = Instant::now();
    let sink_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink_sock.local_addr().unwrap();
    let fwd = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fwd_addr = fwd.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let fwd_t = std::thread::spawn(move || {
        pin(1);
        fwd.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        out.connect(sink_addr).unwrap();
        let c0 = cpu_time();
        let mut buf = [0u8; 2048];
        let (mut count, mut first, mut last) = (0u64, None, Instant::now());
        while !st.load(Ordering::Relaxed) {
            if let Ok(n) = fwd.recv(&mut buf) {
                let _ = out.send(&buf[..n]);
                count += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
        }
        (
            cpu_time() - c0,
            count,
            first.map(|f| last.duration_since(f)).unwrap_or_default(),
        )
    });
    let (sent, r) = phase(fwd_addr, sink_sock, size, secs, rate, epoch);
    stop.store(true, Ordering::Relaxed);
    let (fwd_cpu, count, window) = fwd_t.join().unwrap();
    summarize(sent, r, fwd_cpu, count, window)
}

fn relay(size: usize, secs: u64, rate: u64) -> Run {
    let epoch = Instant::now();
    let sink_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink_sock.local_addr().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let fwd_t = std::thread::spawn(move || {
        pin(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let pool = orbit_media::PortPool::new("127.0.0.1".parse().unwrap(), 39000, 39099);
            let s = orbit_media::Session::open(&pool).unwrap();
            s.set_remote(orbit_media::Leg::B, Some(sink_addr), None);
            // The generator sends from loopback: the relay latches only onto expected sources.
            s.set_source(orbit_media::Leg::A, Some("127.0.0.1".parse().unwrap()));
            addr_tx.send(s.local(orbit_media::Leg::A)).unwrap();
            let c0 = cpu_time();
            let (mut first, mut last, mut seen) = (None, Instant::now(), 0);
            while !st.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let n = s.packets_from(orbit_media::Leg::A);
                if n != seen {
                    if seen == 0 {
                        first = Some(Instant::now());
                    }
                    seen = n;
                    last = Instant::now();
                }
            }
            let c = cpu_time() - c0;
            let w = first.map(|f| last.duration_since(f)).unwrap_or_default();
            drop(s);
            (c, seen, w)
        })
    });
    let fwd_addr = addr_rx.recv().unwrap();
    let (sent, r) = phase(fwd_addr, sink_sock, size, secs, rate, epoch);
    stop.store(true, Ordering::Relaxed);
    let (fwd_cpu, count, window) = fwd_t.join().unwrap();
    summarize(sent, r, fwd_cpu, count, window)
}

/// Packets/s is what the forwarder moved over its active window (as udpfwd reports).
fn summarize(sent: u64, mut r: SinkResult, fwd_cpu: Duration, count: u64, window: Duration) -> Run {
    let _ = (r.packets, r.window);
    let pps = if window.as_secs_f64() > 0.0 {
        count as f64 / window.as_secs_f64()
    } else {
        0.0
    };
    Run {
        sent,
        pps,
        fwd_cpu,
        p50_us: percentile(&mut r.latencies_us, 0.50),
        p99_us: percentile(&mut r.latencies_us, 0.99),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Music { calls, seconds } => music(calls, seconds)?,
        Cmd::OtlpSink { listen } => otlp_sink::run(listen)?,
        Cmd::Registry {
            commits,
            failovers,
            dir,
        } => registry(commits, failovers, dir)?,
        Cmd::Relay {
            seconds,
            size,
            paced_rate,
        } => {
            println!(
                "relay benchmark: {size}-byte packets, forwarder on CPU 1, generator+sink on CPU 0"
            );
            let lp = plain_loop(size, seconds, 0);
            let rl = relay(size, seconds, 0);
            println!(
                "throughput  plain UDP loop: {:>9.0} pkt/s (sent {}, fwd CPU {:.2} s)",
                lp.pps,
                lp.sent,
                lp.fwd_cpu.as_secs_f64()
            );
            println!(
                "throughput  orbit relay:    {:>9.0} pkt/s (sent {}, fwd CPU {:.2} s)  ratio {:.2}x",
                rl.pps,
                rl.sent,
                rl.fwd_cpu.as_secs_f64(),
                rl.pps / lp.pps.max(1.0)
            );
            let secs = seconds.clamp(2, 5);
            let lp = plain_loop(size, secs, paced_rate);
            let rl = relay(size, secs, paced_rate);
            println!(
                "latency at {paced_rate} pkt/s  plain loop p50 {} us p99 {} us | orbit relay p50 {} us p99 {} us | added p50 {} us p99 {} us",
                lp.p50_us,
                lp.p99_us,
                rl.p50_us,
                rl.p99_us,
                rl.p50_us.saturating_sub(lp.p50_us),
                rl.p99_us.saturating_sub(lp.p99_us)
            );
        }
    }
    Ok(())
}
