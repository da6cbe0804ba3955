//! The tokio driver around the sans-I/O [`Edge`]: read sockets, feed the core, write what it
//! produced, sleep until its next timer. One task owns the core, so the core needs no locks.
//! Time comes from tokio's clock (so a test can pause it); no source, however busy, keeps the
//! loop from the others or from the timers (see [`run`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orbit_sip::transport::{
    spawn_stream_listener, Flow, Proto, StreamEvent, StreamLimits, StreamTx,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::core::{Edge, Stats};
use crate::media::{MediaEvent, Relays};

pub struct Sockets {
    pub udp: UdpSocket,
    pub tcp: Option<TcpListener>,
    pub tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// The media relay; none: media commands are dropped (a signalling-only test).
    pub media: Option<MediaIo>,
    /// The registry link, for an edge that uses the registry.
    pub orbit: Option<OrbitIo>,
    /// An operator's questions (the edge's admin listener), answered between inputs.
    pub admin: Option<mpsc::Receiver<AdminAsk>>,
}

/// What the edge's admin listener asks of the edge, each with where the answer goes.
pub enum AdminAsk {
    Calls(oneshot::Sender<Vec<crate::admin::CallView>>),
    Registrations(oneshot::Sender<Vec<crate::admin::RegistrationView>>),
    HangUp(u64, oneshot::Sender<bool>),
    Ready(oneshot::Sender<bool>),
}

fn answer(edge: &mut Edge, ask: AdminAsk) {
    let now = clock();
    match ask {
        AdminAsk::Calls(tx) => {
            let _ = tx.send(edge.calls_view(now));
        }
        AdminAsk::Registrations(tx) => {
            let _ = tx.send(edge.registrations_view(now));
        }
        AdminAsk::HangUp(id, tx) => {
            let _ = tx.send(edge.hang_up_call(now, id));
        }
        AdminAsk::Ready(tx) => {
            let _ = tx.send(edge.ready(now));
        }
    }
}

/// The relay's sockets, and the digits it reports.
pub struct MediaIo {
    relays: Relays,
    digits: mpsc::UnboundedReceiver<MediaEvent>,
}

impl MediaIo {
    /// Relay on `pool`, which must be one whose ports the caller places
    /// ([`orbit_media::PortPool::placed`]): the edge's core plans them.
    pub fn new(pool: orbit_media::PortPool) -> MediaIo {
        let (tx, digits) = mpsc::unbounded_channel();
        MediaIo {
            relays: Relays::new(pool, Some(tx)),
            digits,
        }
    }
}

/// Channels to whatever talks to the registry for this edge: proposals out; outcomes, applied
/// entries and resyncs in.
pub struct OrbitIo {
    pub proposals: mpsc::UnboundedSender<crate::orbit::Proposal>,
    pub feed: mpsc::Receiver<crate::orbit::OrbitFeed>,
}

/// Most UDP datagrams, stream events or registry entries taken from one source in one turn of
/// the loop, before the timers and the other sources get theirs.
const BATCH: usize = 32;

/// The process's one clock: tokio's, so that a test can pause it and step the edge's timers.
fn clock() -> std::time::Instant {
    Instant::now().into_std()
}

/// Run the edge until it has drained: `shutdown` resolving begins a drain of `drain` (an
/// operator's drain through the registry does too); the edge takes nothing new, ends what is
/// left when its time is up, and returns once it has left the registry.
///
/// Fairness: any source can be ready all the time (a UDP flood, a busy registry feed), and
/// none may hold the loop. The select is not biased (tokio polls the branches from a random
/// start each turn); a turn takes at most `BATCH` items from the source it picked; the
/// timers that are due fire after every turn, whatever woke it; and a turn that left more than
/// a batch waiting yields to the runtime, so that the connections' readers and writers, which
/// share this thread, run too. A flood then delays a retransmission or an answer over TCP by
/// a batch or two, not until it stops.
pub async fn run(
    mut edge: Edge,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Stats {
    let udp = Arc::new(sockets.udp);
    let (ev_tx, mut ev_rx) = mpsc::channel::<StreamEvent>(4096);
    let lim = &edge.cfg.limits;
    let limits = StreamLimits {
        max_message: lim.max_message,
        idle: Duration::from_secs(3600),
        first_message: Duration::from_secs(lim.first_message_secs),
        max_connections: lim.max_connections,
        max_per_ip: lim.max_connections_per_ip,
        write_queue: lim.write_queue,
    };
    let mut listeners = vec![];
    if let Some(l) = sockets.tcp {
        listeners.push(spawn_stream_listener(l, None, ev_tx.clone(), limits));
    }
    if let Some((l, acc)) = sockets.tls {
        listeners.push(spawn_stream_listener(l, Some(acc), ev_tx.clone(), limits));
    }
    let mut conns: HashMap<u64, StreamTx> = HashMap::new();
    let (mut relays, mut digits) = match sockets.media {
        Some(m) => (Some(m.relays), Some(m.digits)),
        None => (None, None),
    };
    let mut media_check = tokio::time::interval(Duration::from_secs(1));
    media_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Metrics are published from what the core counts (a no-op without an exporter).
    let mut publish = tokio::time::interval(Duration::from_secs(1));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (proposals, mut feed) = match sockets.orbit {
        Some(io) => (Some(io.proposals), Some(io.feed)),
        None => (None, None),
    };
    let mut admin = sockets.admin;
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(shutdown);
    let mut shutting: Option<Instant> = None;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);

    loop {
        match edge.next_timeout() {
            Some(d) => {
                let d = Instant::from_std(d);
                if sleep.deadline() != d {
                    sleep.as_mut().reset(d);
                }
            }
            None if sleep.is_elapsed() => {
                sleep
                    .as_mut()
                    .reset(Instant::now() + Duration::from_secs(3600));
            }
            None => {}
        }
        // Set when a source still had items after a full batch: yield before the next turn.
        let mut busy = false;
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                match r {
                    Ok((n, addr)) => {
                        let now = clock();
                        let flow = Flow { proto: Proto::Udp, addr, conn: 0 };
                        edge.on_message(now, flow, Bytes::copy_from_slice(&buf[..n]));
                        // Take what else is queued without another trip through the reactor.
                        let mut taken = 1;
                        while taken < BATCH {
                            let Ok((n, addr)) = udp.try_recv_from(&mut buf) else { break };
                            let flow = Flow { proto: Proto::Udp, addr, conn: 0 };
                            edge.on_message(now, flow, Bytes::copy_from_slice(&buf[..n]));
                            taken += 1;
                        }
                        busy = taken == BATCH;
                    }
                    // ICMP errors from earlier sends surface here on Linux.
                    Err(e) => debug!(error = %e, "udp recv"),
                }
            }
            Some(ev) = ev_rx.recv() => {
                let now = clock();
                on_stream_event(&mut edge, &mut conns, now, ev);
                let mut taken = 1;
                while taken < BATCH {
                    let Ok(ev) = ev_rx.try_recv() else { break };
                    on_stream_event(&mut edge, &mut conns, now, ev);
                    taken += 1;
                }
                busy = taken == BATCH;
            }
            Some(ev) = async { digits.as_mut()?.recv().await }, if digits.is_some() => {
                edge.on_media_event(clock(), ev);
            }
            _ = media_check.tick(), if relays.is_some() => {
                let now = clock();
                for ev in relays.as_ref().map(Relays::silent).unwrap_or_default() {
                    edge.on_media_event(now, ev);
                }
            }
            Some(f) = async { feed.as_mut()?.recv().await }, if feed.is_some() => {
                let now = clock();
                edge.on_orbit_feed(now, f);
                // Take what else is queued (a burst of applied entries) in one go.
                let mut taken = 1;
                while taken < BATCH {
                    let Some(Ok(f)) = feed.as_mut().map(|r| r.try_recv()) else { break };
                    edge.on_orbit_feed(now, f);
                    taken += 1;
                }
                busy = taken == BATCH;
            }
            Some(ask) = async { admin.as_mut()?.recv().await }, if admin.is_some() => {
                answer(&mut edge, ask);
            }
            _ = publish.tick() => {
                crate::metrics::publish(&mut edge);
                if let Some(r) = &relays {
                    crate::metrics::relay(&edge, r.packets(), r.music());
                }
            }
            // Woken for a deadline: the timers fire below.
            _ = &mut sleep => {}
            _ = &mut shutdown, if shutting.is_none() => {
                edge.begin_drain(clock(), drain);
                // Past the drain's own deadline the calls are ended; this bounds the wait for
                // their BYEs and the lease's release.
                shutting = Some(Instant::now() + drain + Duration::from_secs(5));
            }
        }
        let now = clock();
        if edge.next_timeout().is_some_and(|t| t <= now) {
            edge.on_timeout(now);
        }
        // Before the messages that announce them, so that the relay is ready when a party
        // learns its ports.
        apply_media(&mut edge, relays.as_mut(), now);
        // After the media: a call ended because its ports failed may have proposed.
        if let Some(p) = &proposals {
            for prop in edge.take_proposals() {
                let _ = p.send(prop);
            }
        }
        let out: Vec<crate::Transmit> = edge.drain().collect();
        send_udp(&udp, &out).await;
        for t in out {
            match t.flow.proto {
                Proto::Udp => {}
                Proto::Tcp | Proto::Tls => match conns.get(&t.flow.conn) {
                    Some(tx) => {
                        if let Err(e) = tx.try_send(t.bytes) {
                            // Full: the peer does not read; the transport closes it.
                            debug!(to = %t.flow.addr, error = ?e, "stream not writable; closed");
                            conns.remove(&t.flow.conn);
                        }
                    }
                    None => warn!(to = %t.flow.addr, "connection gone; message not sent"),
                },
            }
        }
        if edge.drained() || shutting.is_some_and(|until| Instant::now() >= until) {
            info!(left = edge.active_calls(), "edge stopped");
            break;
        }
        if busy {
            // The stream connections and their writers run on this thread: let them, and
            // the reactor, have it before the next batch.
            tokio::task::yield_now().await;
        }
    }
    for l in listeners {
        l.abort();
    }
    crate::metrics::publish(&mut edge);
    crate::metrics::gone(&edge);
    edge.stats().clone()
}

/// Carry out the edge's media commands; a failure goes back to the edge (whose answer may be
/// more commands).
fn apply_media(edge: &mut Edge, relays: Option<&mut Relays>, now: std::time::Instant) {
    let Some(relays) = relays else {
        edge.take_media();
        return;
    };
    loop {
        let failed: Vec<MediaEvent> = edge
            .take_media()
            .into_iter()
            .filter_map(|cmd| relays.apply(cmd))
            .collect();
        if failed.is_empty() {
            return;
        }
        for ev in failed {
            edge.on_media_event(now, ev);
        }
    }
}

fn on_stream_event(
    edge: &mut Edge,
    conns: &mut HashMap<u64, StreamTx>,
    now: std::time::Instant,
    ev: StreamEvent,
) {
    match ev {
        StreamEvent::Opened { flow, tx } => {
            conns.insert(flow.conn, tx);
        }
        StreamEvent::Message { flow, bytes } => edge.on_message(now, flow, bytes),
        StreamEvent::Bad { flow, bytes } => edge.on_bad_stream(flow, &bytes),
        StreamEvent::Closed { flow } => {
            conns.remove(&flow.conn);
            edge.flow_closed(&flow);
        }
    }
}

/// Send this turn's UDP datagrams: in one `sendmmsg` where it can (Linux), one by one where
/// it cannot; a full send buffer is waited for rather than signalling dropped.
async fn send_udp(udp: &UdpSocket, out: &[crate::Transmit]) {
    let msgs: Vec<(std::net::SocketAddr, &[u8])> = out
        .iter()
        .filter(|t| t.flow.proto == Proto::Udp)
        .map(|t| (t.flow.addr, &t.bytes[..]))
        .collect();
    let mut done = 0;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        while done < msgs.len() {
            let r = udp.try_io(tokio::io::Interest::WRITABLE, || {
                orbit_sip::transport::send_batch(udp.as_raw_fd(), &msgs[done..])
            });
            match r {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // One bad destination (ICMP error, unreachable): send that one alone.
                    debug!(error = %e, to = %msgs[done].0, "udp send");
                    done += 1;
                }
            }
        }
    }
    for (addr, bytes) in &msgs[done..] {
        if let Err(e) = udp.try_send_to(bytes, *addr) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                // The send buffer is full: wait for it rather than drop signalling.
                let _ = udp.send_to(bytes, *addr).await;
            } else {
                debug!(error = %e, to = %addr, "udp send");
            }
        }
    }
}

/// Bind the edge's sockets from its config: UDP and TCP on `sip.listen`, TLS on
/// `sip.tls_listen` when an acceptor is given. Returns the sockets and our address per
/// transport (for Via/Contact), with the advertised IP.
pub async fn bind(
    cfg: &crate::EdgeConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<(Sockets, HashMap<Proto, std::net::SocketAddr>)> {
    let udp = orbit_sip::transport::bind_udp(cfg.sip.listen, 8 << 20)?;
    let udp = UdpSocket::from_std(udp)?;
    let port = udp.local_addr()?.port();
    let tcp_addr = std::net::SocketAddr::new(cfg.sip.listen.ip(), port);
    let tcp = TcpListener::bind(tcp_addr).await?;
    let adv = cfg.advertise();
    let mut local = HashMap::new();
    local.insert(Proto::Udp, std::net::SocketAddr::new(adv, port));
    local.insert(Proto::Tcp, std::net::SocketAddr::new(adv, port));
    let tls = match (tls, cfg.sip.tls_listen) {
        (Some(acc), Some(addr)) => {
            let l = TcpListener::bind(addr).await?;
            local.insert(
                Proto::Tls,
                std::net::SocketAddr::new(adv, l.local_addr()?.port()),
            );
            Some((l, acc))
        }
        _ => None,
    };
    Ok((
        Sockets {
            udp,
            tcp: Some(tcp),
            tls,
            media: None,
            orbit: None,
            admin: None,
        },
        local,
    ))
}
