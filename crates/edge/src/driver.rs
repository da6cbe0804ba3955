//! The tokio driver around the sans-I/O [`Edge`]: read sockets, feed the core, write what it
//! produced, sleep until its next timer. One task owns the core, so the core needs no locks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orbit_sip::transport::{spawn_stream_listener, Flow, Proto, StreamEvent, StreamLimits};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::core::{Edge, Stats};

pub struct Sockets {
    pub udp: UdpSocket,
    pub tcp: Option<TcpListener>,
    pub tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// Digits and other events from the media relay.
    pub media: Option<mpsc::UnboundedReceiver<crate::media::MediaEvent>>,
    /// The registry link, for an edge that uses the registry.
    pub orbit: Option<OrbitIo>,
}

/// Channels to whatever talks to the registry for this edge: proposals out; outcomes, applied
/// entries and resyncs in.
pub struct OrbitIo {
    pub proposals: mpsc::UnboundedSender<crate::orbit::Proposal>,
    pub feed: mpsc::Receiver<crate::orbit::OrbitFeed>,
}

/// Run the edge until `shutdown` resolves, then end all calls (BYE/CANCEL) and return once
/// they are gone or after `drain` has passed.
pub async fn run(
    mut edge: Edge,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Stats {
    let udp = Arc::new(sockets.udp);
    let (ev_tx, mut ev_rx) = mpsc::channel::<StreamEvent>(4096);
    let limits = StreamLimits {
        max_message: edge.cfg.limits.max_message,
        idle: Duration::from_secs(3600),
        max_connections: edge.cfg.limits.max_connections,
    };
    let mut listeners = vec![];
    if let Some(l) = sockets.tcp {
        listeners.push(spawn_stream_listener(l, None, ev_tx.clone(), limits));
    }
    if let Some((l, acc)) = sockets.tls {
        listeners.push(spawn_stream_listener(l, Some(acc), ev_tx.clone(), limits));
    }
    let mut conns: HashMap<u64, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    let mut media = sockets.media;
    let (proposals, mut feed) = match sockets.orbit {
        Some(io) => (Some(io.proposals), Some(io.feed)),
        None => (None, None),
    };
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(shutdown);
    let mut shutting: Option<Instant> = None;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);

    loop {
        if let Some(d) = edge.next_timeout() {
            let d = Instant::from_std(d);
            if sleep.deadline() != d {
                sleep.as_mut().reset(d);
            }
        }
        tokio::select! {
            biased;
            r = udp.recv_from(&mut buf) => {
                match r {
                    Ok((n, addr)) => {
                        let flow = Flow { proto: Proto::Udp, addr, conn: 0 };
                        edge.on_message(std::time::Instant::now(), flow, Bytes::copy_from_slice(&buf[..n]));
                        // Take what else is queued without another trip through the reactor.
                        for _ in 0..32 {
                            match udp.try_recv_from(&mut buf) {
                                Ok((n, addr)) => {
                                    let flow = Flow { proto: Proto::Udp, addr, conn: 0 };
                                    edge.on_message(std::time::Instant::now(), flow, Bytes::copy_from_slice(&buf[..n]));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    // ICMP errors from earlier sends surface here on Linux.
                    Err(e) => debug!(error = %e, "udp recv"),
                }
            }
            Some(ev) = ev_rx.recv() => match ev {
                StreamEvent::Opened { flow, tx } => { conns.insert(flow.conn, tx); }
                StreamEvent::Message { flow, bytes } => edge.on_message(std::time::Instant::now(), flow, bytes),
                StreamEvent::Bad { flow, bytes } => edge.on_bad_stream(flow, &bytes),
                StreamEvent::Closed { flow } => {
                    conns.remove(&flow.conn);
                    edge.flow_closed(&flow);
                }
            },
            Some(ev) = async { media.as_mut()?.recv().await }, if media.is_some() => {
                edge.on_media_event(std::time::Instant::now(), ev);
            }
            Some(f) = async { feed.as_mut()?.recv().await }, if feed.is_some() => {
                edge.on_orbit_feed(std::time::Instant::now(), f);
                // Take what else is queued (a burst of applied entries) in one go.
                while let Some(Ok(f)) = feed.as_mut().map(|r| r.try_recv()) {
                    edge.on_orbit_feed(std::time::Instant::now(), f);
                }
            }
            _ = &mut sleep => {
                edge.on_timeout(std::time::Instant::now());
                if edge.next_timeout().is_none() {
                    sleep.as_mut().reset(Instant::now() + Duration::from_secs(3600));
                }
            }
            _ = &mut shutdown, if shutting.is_none() => {
                edge.shutdown(std::time::Instant::now());
                shutting = Some(Instant::now() + drain);
            }
        }
        if let Some(p) = &proposals {
            for prop in edge.take_proposals() {
                let _ = p.send(prop);
            }
        }
        for t in edge.drain() {
            match t.flow.proto {
                Proto::Udp => {
                    if let Err(e) = udp.try_send_to(&t.bytes, t.flow.addr) {
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            // The send buffer is full: wait for it rather than drop signalling.
                            let _ = udp.send_to(&t.bytes, t.flow.addr).await;
                        } else {
                            debug!(error = %e, to = %t.flow.addr, "udp send");
                        }
                    }
                }
                Proto::Tcp | Proto::Tls => match conns.get(&t.flow.conn) {
                    Some(tx) => {
                        let _ = tx.send(t.bytes);
                    }
                    None => warn!(to = %t.flow.addr, "connection gone; message not sent"),
                },
            }
        }
        if let Some(until) = shutting {
            if edge.active_calls() == 0 || Instant::now() >= until {
                info!(left = edge.active_calls(), "edge stopped");
                break;
            }
        }
    }
    for l in listeners {
        l.abort();
    }
    edge.stats.clone()
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
        },
        local,
    ))
}
