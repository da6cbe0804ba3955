//! The RTP/RTCP relay: port pairs from a range, two endpoints per call (one facing each party),
//! symmetric latching, and forwarding in both directions.
//!
//! ```text
//!  party A ──RTP──▶ [endpoint A: port p, p+1] ──forward──▶ [endpoint B: port q, q+1] ──▶ party B
//!  party A ◀────────[endpoint A]◀──────────────────────── [endpoint B] ◀──RTP──────────  party B
//! ```
//!
//! A packet arriving at endpoint A is sent out of endpoint B (so B sees the relay as its peer).
//! Each endpoint first sends to the address its party announced in SDP; the first packet that
//! arrives from the party latches the endpoint onto its real source, and from then on packets
//! from any other source are dropped (symmetric RTP, so NATed phones work and strangers cannot
//! inject media).
//!
//! Ports go back to the pool when the [`Session`] is dropped: every way a call ends drops it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no free RTP port pair in range")]
    Exhausted,
    #[error("binding relay port: {0}")]
    Io(#[from] std::io::Error),
}

/// Allocates even/odd port pairs from a configured range.
#[derive(Clone)]
pub struct PortPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ip: IpAddr,
    free: Mutex<VecDeque<u16>>,
    total: usize,
    epoch: Instant,
}

impl PortPool {
    /// `first..=last` inclusive; the pool uses every even port whose odd neighbour is in range.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> PortPool {
        let start = first + (first & 1);
        let free: VecDeque<u16> = (start..last).step_by(2).collect();
        let total = free.len();
        PortPool {
            inner: Arc::new(PoolInner {
                ip,
                free: Mutex::new(free),
                total,
                epoch: Instant::now(),
            }),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.inner.ip
    }

    /// Port pairs in use right now.
    pub fn in_use(&self) -> usize {
        self.inner.total - self.inner.free.lock().unwrap().len()
    }

    pub fn capacity(&self) -> usize {
        self.inner.total
    }

    fn take(&self) -> Result<(std::net::UdpSocket, std::net::UdpSocket, u16), RelayError> {
        // A port may be held by another process; try a few before giving up.
        for _ in 0..16 {
            let port = self
                .inner
                .free
                .lock()
                .unwrap()
                .pop_front()
                .ok_or(RelayError::Exhausted)?;
            let bind = |p: u16| {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(SocketAddr::new(self.inner.ip, p)),
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )?;
                let _ = s.set_recv_buffer_size(256 * 1024);
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::new(self.inner.ip, p).into())?;
                Ok::<_, std::io::Error>(std::net::UdpSocket::from(s))
            };
            match (bind(port), bind(port + 1)) {
                (Ok(a), Ok(b)) => return Ok((a, b, port)),
                (a, b) => {
                    let e = a.err().or(b.err());
                    warn!(port, error = ?e, "relay port busy, skipping");
                    // Put it at the back: it may be free again later.
                    self.inner.free.lock().unwrap().push_back(port);
                }
            }
        }
        Err(RelayError::Exhausted)
    }

    fn give_back(&self, port: u16) {
        self.inner.free.lock().unwrap().push_back(port);
    }

    fn millis(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}

/// Where one side's packets should go, and where they must come from.
#[derive(Debug, Default, Clone, Copy)]
struct Peer {
    /// From SDP.
    announced: Option<SocketAddr>,
    /// From the first packet received (symmetric RTP).
    latched: Option<SocketAddr>,
}

impl Peer {
    fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.announced)
    }
}

struct Side {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    port: u16,
    rtp_peer: Mutex<Peer>,
    rtcp_peer: Mutex<Peer>,
    packets_in: AtomicU64,
}

struct Shared {
    sides: [Side; 2],
    last_rx_ms: AtomicU64,
    pool: PortPool,
    /// Declared last so that it drops after the sockets are closed.
    _ports: PortGuard,
}

/// Returns ports to the pool once the sockets that held them are closed.
struct PortGuard {
    pool: PortPool,
    ports: [u16; 2],
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        for p in self.ports {
            self.pool.give_back(p);
        }
    }
}

/// A relayed call: two endpoints. Dropping it stops forwarding and frees its ports.
pub struct Session {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Which party an endpoint faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    A = 0,
    B = 1,
}

impl Session {
    /// Allocate both endpoints and start forwarding. Must run inside a tokio runtime.
    pub fn open(pool: &PortPool) -> Result<Session, RelayError> {
        let (a_rtp, a_rtcp, a_port) = pool.take()?;
        let b = pool.take();
        let (b_rtp, b_rtcp, b_port) = match b {
            Ok(x) => x,
            Err(e) => {
                drop((a_rtp, a_rtcp));
                pool.give_back(a_port);
                return Err(e);
            }
        };
        let side = |rtp, rtcp, port| -> std::io::Result<Side> {
            Ok(Side {
                rtp: UdpSocket::from_std(rtp)?,
                rtcp: UdpSocket::from_std(rtcp)?,
                port,
                rtp_peer: Mutex::new(Peer::default()),
                rtcp_peer: Mutex::new(Peer::default()),
                packets_in: AtomicU64::new(0),
            })
        };
        let shared = Arc::new(Shared {
            sides: [side(a_rtp, a_rtcp, a_port)?, side(b_rtp, b_rtcp, b_port)?],
            last_rx_ms: AtomicU64::new(pool.millis()),
            pool: pool.clone(),
            _ports: PortGuard {
                pool: pool.clone(),
                ports: [a_port, b_port],
            },
        });
        let mut tasks = Vec::with_capacity(4);
        for from in [0usize, 1] {
            for rtcp in [false, true] {
                let s = shared.clone();
                tasks.push(tokio::spawn(forward(s, from, rtcp)));
            }
        }
        Ok(Session { shared, tasks })
    }

    /// The relay address the given party must send to (the port of its endpoint).
    pub fn local(&self, leg: Leg) -> SocketAddr {
        SocketAddr::new(self.shared.pool.ip(), self.shared.sides[leg as usize].port)
    }

    /// Set (or change, on re-INVITE) what a party announced in its SDP.
    pub fn set_remote(&self, leg: Leg, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let side = &self.shared.sides[leg as usize];
        let mut p = side.rtp_peer.lock().unwrap();
        if p.announced != rtp {
            p.announced = rtp;
        }
        side.rtcp_peer.lock().unwrap().announced = rtcp;
    }

    /// Packets received from the party on this leg.
    pub fn packets_from(&self, leg: Leg) -> u64 {
        self.shared.sides[leg as usize]
            .packets_in
            .load(Ordering::Relaxed)
    }

    /// How long since the last packet from either party (RTP or RTCP).
    pub fn idle(&self) -> Duration {
        let now = self.shared.pool.millis();
        Duration::from_millis(now.saturating_sub(self.shared.last_rx_ms.load(Ordering::Relaxed)))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // The ports go back when the aborted tasks have released `Shared` (see PortGuard).
    }
}

async fn forward(shared: Arc<Shared>, from: usize, rtcp: bool) {
    let to = 1 - from;
    let (sock, out) = {
        let (a, b) = (&shared.sides[from], &shared.sides[to]);
        if rtcp {
            (&a.rtcp, &b.rtcp)
        } else {
            (&a.rtp, &b.rtp)
        }
    };
    let mut buf = vec![0u8; 2048];
    loop {
        if let Err(e) = sock.readable().await {
            debug!(error = %e, "relay socket");
            return;
        }
        // Drain what is queued without going back to the reactor for every packet.
        loop {
            let (n, src) = match sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable from an earlier send shows up here on Linux; ignore.
                Err(_) => continue,
            };
            relay_one(&shared, from, rtcp, out, &buf[..n], src);
        }
    }
}

/// Latch, count and forward one packet.
fn relay_one(
    shared: &Shared,
    from: usize,
    rtcp: bool,
    out: &UdpSocket,
    pkt: &[u8],
    src: SocketAddr,
) {
    let to = 1 - from;
    let side = &shared.sides[from];
    {
        let mut p = if rtcp {
            side.rtcp_peer.lock().unwrap()
        } else {
            side.rtp_peer.lock().unwrap()
        };
        match p.latched {
            Some(l) if l != src => return,
            Some(_) => {}
            None => {
                debug!(%src, leg = from, rtcp, "relay latched");
                p.latched = Some(src);
            }
        }
    }
    if !rtcp {
        side.packets_in.fetch_add(1, Ordering::Relaxed);
    }
    shared
        .last_rx_ms
        .store(shared.pool.millis(), Ordering::Relaxed);
    let dest = {
        let other = &shared.sides[to];
        let p = if rtcp {
            other.rtcp_peer.lock().unwrap()
        } else {
            other.rtp_peer.lock().unwrap()
        };
        p.dest()
    };
    if let Some(d) = dest {
        // A full send buffer drops the packet, as the network would; RTP tolerates loss,
        // and waiting here would delay every packet behind it.
        let _ = out.try_send_to(pkt, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_with_latching_and_frees_ports() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 31000, 31009);
        assert_eq!(pool.capacity(), 5);
        let s = Session::open(&pool).unwrap();
        assert_eq!(pool.in_use(), 2);
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // B announced its address; A did not (latching will learn it).
        s.set_remote(Leg::B, Some(b.local_addr().unwrap()), None);
        a.send_to(b"hello-b", s.local(Leg::A)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello-b");
        assert_eq!(from, s.local(Leg::B));
        b.send_to(b"hello-a", s.local(Leg::B)).await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello-a");
        assert_eq!(from, s.local(Leg::A));
        // A stranger sending to A's endpoint is not forwarded.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"evil", s.local(Leg::A)).await.unwrap();
        a.send_to(b"good", s.local(Leg::A)).await.unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"good");
        assert_eq!(s.packets_from(Leg::A), 2);
        drop(s);
        // Aborted tasks release their Arc at the next poll.
        for _ in 0..100 {
            if pool.in_use() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.in_use(), 0);
        // And the ports really are free for others.
        std::net::UdpSocket::bind("127.0.0.1:31000").unwrap();
    }

    #[tokio::test]
    async fn exhausts_cleanly() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 31100, 31103);
        let _s = Session::open(&pool).unwrap();
        assert!(matches!(Session::open(&pool), Err(RelayError::Exhausted)));
        assert_eq!(pool.in_use(), 2);
    }
}
