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
//! arrives from the party latches the endpoint onto its real source (symmetric RTP, so NATed
//! phones work), and from then on packets from any other source are dropped.
//!
//! Latching is not open to whoever sends first: a relay port can be guessed, and a stranger
//! whose packet arrived before the phone's (or right after a party left, [`Session::vacate`])
//! would take the stream over. So an endpoint latches only onto a source whose IP is one the
//! signalling expects for its party: the IP of the RTP or RTCP address announced in SDP
//! ([`Session::set_remote`]), or the IP its SIP signalling came from ([`Session::set_source`],
//! for a phone behind NAT whose SDP names a private address). The port may differ (NAT), the IP
//! may not. A leg with no expectation (none set yet, or vacated) latches nothing. Dropped packets
//! are neither forwarded nor counted as activity. Ports are handed out in random order, so that
//! a call's ports cannot be guessed from another's.
//!
//! Endpoints are pooled: opening and closing four sockets per call (socket, bind, epoll
//! registration, close) was a fifth of the edge's CPU at a few thousand calls/s. A released
//! endpoint is detached at once (its packets are dropped from then on), waits `reuse_after`
//! before another call may take it (late packets of the old call find nobody to latch), and is
//! closed, its ports returned to the system, after `close_after` unused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::audio::{Clip, Codec};
use crate::player::{Player, Sub};
pub use crate::ports::PoolTiming;
use crate::ports::PortPlan;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no free RTP port pair in range")]
    Exhausted,
    #[error("binding relay port: {0}")]
    Io(#[from] std::io::Error),
}

/// The relay's sockets: port pairs bound to endpoints, attached to calls or waiting for reuse.
///
/// Which ports a call gets is a [`PortPlan`]'s choice: either the pool's own
/// ([`PortPool::new`], then [`Session::open`] takes ports from it and [`PortPool::maintain`]
/// closes the ones unused long enough), or one kept by whoever opens sessions
/// ([`PortPool::placed`]: the edge's sans-I/O core plans, its driver opens sessions at the
/// ports planned with [`Session::open_at`] and closes them with [`PortPool::unbind`]).
#[derive(Clone)]
pub struct PortPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ip: IpAddr,
    /// The pool's own plan; none when the ports are placed by the caller.
    plan: Option<Mutex<PortPlan>>,
    /// Endpoints bound and detached (released by their call), by port.
    detached: Mutex<HashMap<u16, Arc<Endpoint>>>,
    attached: AtomicUsize,
    /// Packets forwarded and dropped by sessions that have ended (live ones count their own:
    /// no counter shared between calls is touched per packet).
    ended: [AtomicU64; 2],
    /// The runtime that runs the forwarding tasks (the caller's when not set).
    runtime: Option<tokio::runtime::Handle>,
    /// Plays music and prompts into legs; its thread starts with the first clip played.
    player: std::sync::OnceLock<Arc<Player>>,
}

impl PortPool {
    /// Packets forwarded and dropped by the sessions of this pool that have ended.
    pub fn ended_packets(&self) -> (u64, u64) {
        (
            self.inner.ended[0].load(Ordering::Relaxed),
            self.inner.ended[1].load(Ordering::Relaxed),
        )
    }

    /// `first..=last` inclusive; the pool uses every even port whose odd neighbour is in range.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> PortPool {
        Self::with_timing(ip, first, last, PoolTiming::default())
    }

    pub fn with_timing(ip: IpAddr, first: u16, last: u16, timing: PoolTiming) -> PortPool {
        let plan = PortPlan::new(first, last, timing, &mut rand::thread_rng());
        Self::build(ip, Some(plan))
    }

    /// A pool whose ports are chosen by the caller ([`Session::open_at`]), closed when it says
    /// ([`PortPool::unbind`]).
    pub fn placed(ip: IpAddr) -> PortPool {
        Self::build(ip, None)
    }

    fn build(ip: IpAddr, plan: Option<PortPlan>) -> PortPool {
        PortPool {
            inner: Arc::new(PoolInner {
                ip,
                plan: plan.map(Mutex::new),
                detached: Mutex::new(HashMap::new()),
                attached: AtomicUsize::new(0),
                ended: Default::default(),
                runtime: None,
                player: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Run the forwarding tasks on `rt`, whatever runtime opens sessions (the SIP core runs on
    /// a runtime of its own).
    pub fn on_runtime(mut self, rt: tokio::runtime::Handle) -> PortPool {
        Arc::get_mut(&mut self.inner)
            .expect("configure the pool before sharing it")
            .runtime = Some(rt);
        self
    }

    pub fn ip(&self) -> IpAddr {
        self.inner.ip
    }

    /// Port pairs attached to calls right now.
    pub fn in_use(&self) -> usize {
        self.inner.attached.load(Ordering::Relaxed)
    }

    /// Port pairs bound by the relay (in use, or detached awaiting reuse or close).
    pub fn bound(&self) -> usize {
        self.in_use() + self.inner.detached.lock().unwrap().len()
    }

    /// Port pairs in the pool's own plan (0 when the caller places the ports).
    pub fn capacity(&self) -> usize {
        self.inner
            .plan
            .as_ref()
            .map_or(0, |p| p.lock().unwrap().capacity())
    }

    fn player(&self) -> &Arc<Player> {
        self.inner.player.get_or_init(Player::start)
    }

    /// CPU time the player thread has used (music and prompts for every call), and packets it
    /// has sent.
    pub fn player_usage(&self) -> (Duration, u64) {
        self.inner
            .player
            .get()
            .map(|p| p.usage())
            .unwrap_or((Duration::ZERO, 0))
    }

    /// Close the endpoints the pool's plan released longer than `close_after` ago. Cheap; call
    /// it every second.
    pub fn maintain(&self) {
        self.close_idle(Instant::now());
    }

    /// Close the endpoints the pool's plan released `close_after` or longer before `now`.
    pub fn close_idle(&self, now: Instant) {
        let Some(plan) = &self.inner.plan else {
            return;
        };
        let due = plan.lock().unwrap().close_due(now, &mut rand::thread_rng());
        self.unbind(&due);
    }

    /// Close the detached endpoints at these ports (the ports return to the system).
    pub fn unbind(&self, ports: &[u16]) {
        let mut detached = self.inner.detached.lock().unwrap();
        for p in ports {
            if let Some(ep) = detached.remove(p) {
                ep.close();
            }
        }
    }

    /// The endpoint at `port`: the detached one bound there, else a newly bound one.
    fn endpoint(&self, port: u16) -> Result<Arc<Endpoint>, RelayError> {
        if let Some(ep) = self.inner.detached.lock().unwrap().remove(&port) {
            return Ok(ep);
        }
        let rt = match &self.inner.runtime {
            Some(h) => h.clone(),
            None => tokio::runtime::Handle::current(),
        };
        Endpoint::bind(self.inner.ip, port, &rt)
    }

    /// Two endpoints from the pool's own plan (a port another process holds is skipped, up to
    /// 16 times).
    fn take_planned(&self) -> Result<[Arc<Endpoint>; 2], RelayError> {
        let plan = self.inner.plan.as_ref().ok_or(RelayError::Exhausted)?;
        let mut rng = rand::thread_rng();
        let mut got: Vec<Arc<Endpoint>> = vec![];
        let mut tries = 0;
        while got.len() < 2 {
            let port = plan.lock().unwrap().take(Instant::now(), &mut rng);
            let Some(port) = port else {
                for ep in got {
                    self.release(ep);
                }
                return Err(RelayError::Exhausted);
            };
            match self.endpoint(port) {
                Ok(ep) => got.push(ep),
                Err(e) if tries < 16 => {
                    tries += 1;
                    warn!(port, error = %e, "relay port busy, skipping");
                    plan.lock().unwrap().unusable(port);
                }
                Err(e) => {
                    plan.lock().unwrap().unusable(port);
                    for ep in got {
                        self.release(ep);
                    }
                    return Err(e);
                }
            }
        }
        let b = got.pop().expect("two");
        let a = got.pop().expect("two");
        Ok([a, b])
    }

    /// A call is done with `ep`: detached, kept bound for reuse.
    fn release(&self, ep: Arc<Endpoint>) {
        if let Some(plan) = &self.inner.plan {
            plan.lock().unwrap().release(Instant::now(), ep.port);
        }
        self.inner.detached.lock().unwrap().insert(ep.port, ep);
    }
}

/// Where one side's packets should go, and where they must come from.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Peer {
    /// From SDP.
    announced: Option<SocketAddr>,
    /// The IPs the party's first packet may come from (the same for its RTP and RTCP).
    expect: Expect,
    /// From the first packet received from an expected IP (symmetric RTP).
    latched: Option<SocketAddr>,
}

impl Peer {
    pub(crate) fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.announced)
    }
}

/// The IPs the signalling expects a party's media from: those of its SDP addresses (RTP and
/// RTCP) and the one its SIP signalling came from. None: nothing may latch.
#[derive(Debug, Default, Clone, Copy)]
struct Expect {
    sdp: [Option<IpAddr>; 2],
    signalling: Option<IpAddr>,
}

impl Expect {
    fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        [self.sdp[0], self.sdp[1], self.signalling]
            .into_iter()
            .flatten()
            .any(|e| e.to_canonical() == ip)
    }
}

/// A bound RTP/RTCP socket pair with its two forwarding tasks, attached to at most one call.
pub(crate) struct Endpoint {
    port: u16,
    pub(crate) rtp: UdpSocket,
    rtcp: UdpSocket,
    /// The call it serves and which side of it this endpoint is.
    attached: Mutex<Option<(Arc<Shared>, usize)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Endpoint {
    fn bind(
        ip: IpAddr,
        port: u16,
        rt: &tokio::runtime::Handle,
    ) -> Result<Arc<Endpoint>, RelayError> {
        // Sockets register with the reactor of the runtime that will poll them.
        let _enter = rt.enter();
        let bind = |p: u16| {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(SocketAddr::new(ip, p)),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            let _ = s.set_recv_buffer_size(256 * 1024);
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::new(ip, p).into())?;
            UdpSocket::from_std(std::net::UdpSocket::from(s))
        };
        let ep = Arc::new(Endpoint {
            port,
            rtp: bind(port)?,
            rtcp: bind(port + 1)?,
            attached: Mutex::new(None),
            tasks: Mutex::new(vec![]),
        });
        let tasks = [false, true].map(|rtcp| rt.spawn(forward(ep.clone(), rtcp)));
        ep.tasks.lock().unwrap().extend(tasks);
        Ok(ep)
    }

    fn close(&self) {
        *self.attached.lock().unwrap() = None;
        for t in self.tasks.lock().unwrap().drain(..) {
            // The tasks hold the last references; the sockets close when they are gone.
            t.abort();
        }
    }

    fn socket(&self, rtcp: bool) -> &UdpSocket {
        if rtcp {
            &self.rtcp
        } else {
            &self.rtp
        }
    }
}

/// A DTMF digit (RFC 4733 telephone-event) received from a party.
pub type DtmfSink = Arc<dyn Fn(Leg, char) + Send + Sync>;

/// Per-call relay state: the two endpoints and what each party announced and latched.
pub(crate) struct Shared {
    pub(crate) ep: [Arc<Endpoint>; 2],
    pub(crate) rtp_peer: [Mutex<Peer>; 2],
    rtcp_peer: [Mutex<Peer>; 2],
    /// Per leg: the generation of what the player feeds it, 0 when it hears the other party.
    pub(crate) playing: [AtomicU64; 2],
    /// Per leg: the telephone-event payload type it announced (`NO_DTMF`: none), read on every
    /// packet without a lock; and the RTP timestamp of the last event reported (an event's
    /// packets share one timestamp; its end is sent 3 times).
    dtmf_pt: [std::sync::atomic::AtomicU16; 2],
    dtmf_last: [Mutex<Option<u32>>; 2],
    dtmf_sink: Mutex<Option<DtmfSink>>,
    packets_in: [AtomicU64; 2],
    /// Every packet received, RTP and RTCP, either side: the idle check watches it change
    /// (a counter costs less per packet than reading the clock).
    received: AtomicU64,
    /// Packets forwarded to the other party, and dropped (a stranger's, or the send buffer
    /// full), RTP and RTCP.
    forwarded: AtomicU64,
    dropped: AtomicU64,
    pool: PortPool,
}

/// A relayed call: two endpoints. Dropping it stops forwarding and releases them.
pub struct Session {
    shared: Arc<Shared>,
    /// (packets seen at the last idle check, when that count last changed).
    activity: Mutex<(u64, Instant)>,
}

/// Which party an endpoint faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    A = 0,
    B = 1,
}

impl Session {
    /// Two endpoints at ports from the pool's own plan, forwarding. Must run inside a tokio
    /// runtime (or on a pool given one).
    pub fn open(pool: &PortPool) -> Result<Session, RelayError> {
        let [a, b] = pool.take_planned()?;
        Ok(Self::attach(pool, a, b))
    }

    /// Two endpoints at the ports given (their RTP ports; RTCP is the next port up), bound now
    /// unless the pool still holds them from an earlier call: for a pool whose ports the
    /// caller places ([`PortPool::placed`]).
    pub fn open_at(pool: &PortPool, ports: [u16; 2]) -> Result<Session, RelayError> {
        let a = pool.endpoint(ports[0])?;
        let b = match pool.endpoint(ports[1]) {
            Ok(b) => b,
            Err(e) => {
                pool.release(a);
                return Err(e);
            }
        };
        Ok(Self::attach(pool, a, b))
    }

    fn attach(pool: &PortPool, a: Arc<Endpoint>, b: Arc<Endpoint>) -> Session {
        let shared = Arc::new(Shared {
            ep: [a, b],
            rtp_peer: Default::default(),
            rtcp_peer: Default::default(),
            playing: Default::default(),
            dtmf_pt: [NO_DTMF, NO_DTMF].map(std::sync::atomic::AtomicU16::new),
            dtmf_last: Default::default(),
            dtmf_sink: Mutex::new(None),
            packets_in: Default::default(),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pool: pool.clone(),
        });
        for side in 0..2 {
            *shared.ep[side].attached.lock().unwrap() = Some((shared.clone(), side));
        }
        pool.inner.attached.fetch_add(2, Ordering::Relaxed);
        Session {
            shared,
            activity: Mutex::new((0, Instant::now())),
        }
    }

    /// The relay address the given party must send to (the port of its endpoint).
    pub fn local(&self, leg: Leg) -> SocketAddr {
        SocketAddr::new(self.shared.pool.ip(), self.shared.ep[leg as usize].port)
    }

    /// Set (or change, on re-INVITE) what a party announced in its SDP: where its RTP and RTCP
    /// are sent until it latches, and (their IPs) where its first packets may come from.
    pub fn set_remote(&self, leg: Leg, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let i = leg as usize;
        let sdp = [rtp.map(|a| a.ip()), rtcp.map(|a| a.ip())];
        for (peer, addr) in [
            (&self.shared.rtp_peer[i], rtp),
            (&self.shared.rtcp_peer[i], rtcp),
        ] {
            let mut p = peer.lock().unwrap();
            p.announced = addr;
            p.expect.sdp = sdp;
        }
    }

    /// Set the IP the party's SIP signalling came from (the source of its INVITE or answer):
    /// its media may latch from there too, whatever its SDP says (a phone behind NAT announces
    /// a private address and sends from its public one). `None` forgets it.
    pub fn set_source(&self, leg: Leg, ip: Option<IpAddr>) {
        let i = leg as usize;
        for peer in [&self.shared.rtp_peer[i], &self.shared.rtcp_peer[i]] {
            peer.lock().unwrap().expect.signalling = ip;
        }
    }

    /// Play `clip` to the party on `leg` instead of the other party's audio: looped (music on
    /// hold, every call of one clip at the same point, as a radio) or once (a prompt, then
    /// silence). `pt` is the payload type the party expects for `codec`.
    pub fn play(&self, leg: Leg, clip: Arc<Clip>, codec: Codec, pt: u8, looped: bool) {
        let pool = &self.shared.pool;
        let gen = pool.player().next_generation();
        self.shared.playing[leg as usize].store(gen, Ordering::Relaxed);
        pool.player().add(Sub::new(
            Arc::downgrade(&self.shared),
            leg as usize,
            gen,
            clip,
            codec,
            pt,
            looped,
        ));
    }

    /// Let the party on `leg` hear the other party again.
    pub fn bridge(&self, leg: Leg) {
        self.shared.playing[leg as usize].store(0, Ordering::Relaxed);
    }

    /// The party on `leg` has gone: forget its addresses and what was expected of it, so that
    /// nothing is sent to it and nothing from anyone is accepted, until `set_remote` and
    /// `set_source` for the next party to take the leg (a retriever, a recall), which latches
    /// afresh.
    pub fn vacate(&self, leg: Leg) {
        let i = leg as usize;
        *self.shared.rtp_peer[i].lock().unwrap() = Peer::default();
        *self.shared.rtcp_peer[i].lock().unwrap() = Peer::default();
        self.shared.dtmf_pt[i].store(NO_DTMF, Ordering::Relaxed);
        *self.shared.dtmf_last[i].lock().unwrap() = None;
    }

    /// Report RFC 4733 digits the party on `leg` sends with payload type `pt`.
    pub fn set_dtmf(&self, leg: Leg, pt: Option<u8>) {
        self.shared.dtmf_pt[leg as usize].store(pt.map_or(NO_DTMF, u16::from), Ordering::Relaxed);
    }

    /// Where digits go.
    pub fn on_dtmf(&self, sink: DtmfSink) {
        *self.shared.dtmf_sink.lock().unwrap() = Some(sink);
    }

    /// How many of this call's two parties hear music or a prompt now.
    pub fn legs_playing(&self) -> usize {
        self.shared
            .playing
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Packets this call forwarded and dropped so far (RTP and RTCP, both ways).
    pub fn packets(&self) -> (u64, u64) {
        let s = &self.shared;
        (
            s.forwarded.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
        )
    }

    /// RTP packets received from the party on this leg.
    pub fn packets_from(&self, leg: Leg) -> u64 {
        self.shared.packets_in[leg as usize].load(Ordering::Relaxed)
    }

    /// How long no packet has come from either party (RTP or RTCP), to the resolution of how
    /// often this is asked (the edge asks every second).
    pub fn idle(&self) -> Duration {
        let n = self.shared.received.load(Ordering::Relaxed);
        let mut a = self.activity.lock().unwrap();
        let now = Instant::now();
        if n != a.0 {
            *a = (n, now);
        }
        now.duration_since(a.1)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Detach first (breaking the endpoint → call reference), then hand the endpoints back.
        for ep in &self.shared.ep {
            *ep.attached.lock().unwrap() = None;
        }
        let pool = self.shared.pool.clone();
        pool.inner.attached.fetch_sub(2, Ordering::Relaxed);
        let (forwarded, dropped) = self.packets();
        pool.inner.ended[0].fetch_add(forwarded, Ordering::Relaxed);
        pool.inner.ended[1].fetch_add(dropped, Ordering::Relaxed);
        for ep in &self.shared.ep {
            pool.release(ep.clone());
        }
    }
}

async fn forward(ep: Arc<Endpoint>, rtcp: bool) {
    let sock = ep.socket(rtcp);
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
            let attached = ep.attached.lock().unwrap();
            if let Some((shared, side)) = attached.as_ref() {
                relay_one(shared, *side, rtcp, &buf[..n], src);
            }
        }
    }
}

/// Latch, count and forward one packet that arrived at side `from`.
fn relay_one(shared: &Shared, from: usize, rtcp: bool, pkt: &[u8], src: SocketAddr) {
    let to = 1 - from;
    let peers = if rtcp {
        &shared.rtcp_peer
    } else {
        &shared.rtp_peer
    };
    {
        let mut p = peers[from].lock().unwrap();
        match p.latched {
            Some(l) if l != src => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(_) => {}
            None if p.expect.admits(src.ip()) => {
                debug!(%src, leg = from, rtcp, "relay latched");
                p.latched = Some(src);
            }
            // Not from where the signalling expects this party (or no party yet): a stranger.
            None => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    if !rtcp {
        shared.packets_in[from].fetch_add(1, Ordering::Relaxed);
        dtmf(shared, from, pkt);
    }
    shared.received.fetch_add(1, Ordering::Relaxed);
    if shared.playing[to].load(Ordering::Relaxed) != 0 {
        return; // the other party hears music or a prompt
    }
    let dest = peers[to].lock().unwrap().dest();
    if let Some(d) = dest {
        // A full send buffer drops the packet, as the network would; RTP tolerates loss,
        // and waiting here would delay every packet behind it.
        match shared.ep[to].socket(rtcp).try_send_to(pkt, d) {
            Ok(_) => shared.forwarded.fetch_add(1, Ordering::Relaxed),
            Err(_) => shared.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

const NO_DTMF: u16 = u16::MAX;

/// Report the end of an RFC 4733 telephone-event once.
fn dtmf(shared: &Shared, from: usize, pkt: &[u8]) {
    let pt = shared.dtmf_pt[from].load(Ordering::Relaxed);
    if pt == NO_DTMF || pkt.len() < 2 || u16::from(pkt[1] & 0x7f) != pt {
        return; // the common case, every voice packet: no parse, no lock
    }
    let pt = pt as u8;
    let Ok(r) = rtp_rs::RtpReader::new(pkt) else {
        return;
    };
    let p = r.payload();
    if r.payload_type() != pt || p.len() < 4 || p[1] & 0x80 == 0 {
        return; // not an event, or not its end
    }
    let digit = match p[0] {
        d @ 0..=9 => (b'0' + d) as char,
        10 => '*',
        11 => '#',
        d @ 12..=15 => (b'A' + d - 12) as char,
        _ => return,
    };
    {
        let mut last = shared.dtmf_last[from].lock().unwrap();
        if *last == Some(r.timestamp()) {
            return; // a retransmitted end packet
        }
        *last = Some(r.timestamp());
    }
    let sink = shared.dtmf_sink.lock().unwrap().clone();
    if let Some(sink) = sink {
        let leg = if from == 0 { Leg::A } else { Leg::B };
        sink(leg, digit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A socket on another loopback address: a stranger to a party on 127.0.0.1.
    async fn stranger() -> UdpSocket {
        UdpSocket::bind("127.0.0.2:0").await.unwrap()
    }

    /// The next packet `sock` receives within 200 ms, if any.
    async fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await;
        r.ok().map(|r| buf[..r.unwrap().0].to_vec())
    }

    /// A session between a phone on A and a party on B, both having announced their address
    /// (the phone has sent nothing yet).
    async fn call(pool: &PortPool) -> (Session, UdpSocket, UdpSocket) {
        let s = Session::open(pool).unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(Leg::A, Some(phone.local_addr().unwrap()), None);
        s.set_remote(Leg::B, Some(b.local_addr().unwrap()), None);
        (s, phone, b)
    }

    #[tokio::test]
    async fn stranger_before_the_phone_does_not_latch() {
        let pool = PortPool::new(LOCAL, 31500, 31509);
        let (s, phone, b) = call(&pool).await;
        let stranger = stranger().await;
        for _ in 0..3 {
            stranger.send_to(b"evil", s.local(Leg::A)).await.unwrap();
        }
        phone.send_to(b"voice", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await.as_deref(), Some(&b"voice"[..]));
        assert_eq!(s.packets_from(Leg::A), 1);
        // B's audio goes to the phone, not to the stranger.
        b.send_to(b"reply", s.local(Leg::B)).await.unwrap();
        assert_eq!(recv(&phone).await.as_deref(), Some(&b"reply"[..]));
        assert_eq!(recv(&stranger).await, None);
        assert_eq!(recv(&b).await, None);
    }

    #[tokio::test]
    async fn stranger_after_latching_is_dropped_rtp_and_rtcp() {
        let pool = PortPool::new(LOCAL, 31600, 31609);
        let (s, phone, b) = call(&pool).await;
        // The phone announced RTCP too; it has sent RTP, no RTCP yet.
        let phone_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(
            Leg::A,
            Some(phone.local_addr().unwrap()),
            Some(phone_rtcp.local_addr().unwrap()),
        );
        let b_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(
            Leg::B,
            Some(b.local_addr().unwrap()),
            Some(b_rtcp.local_addr().unwrap()),
        );
        phone.send_to(b"v1", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await.as_deref(), Some(&b"v1"[..]));
        let rtcp_port = |leg| {
            let mut a = s.local(leg);
            a.set_port(a.port() + 1);
            a
        };
        // Strangers: RTP from another IP and from the phone's own IP (latched: dropped), RTCP
        // from another IP (not latched yet, but not from where the phone is expected).
        let near = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let far = stranger().await;
        far.send_to(b"evil", s.local(Leg::A)).await.unwrap();
        near.send_to(b"evil", s.local(Leg::A)).await.unwrap();
        far.send_to(b"evil-rtcp", rtcp_port(Leg::A)).await.unwrap();
        phone.send_to(b"v2", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await.as_deref(), Some(&b"v2"[..]));
        assert_eq!(recv(&b).await, None);
        assert_eq!(s.packets_from(Leg::A), 2);
        // The phone's RTCP still latches, and only it is forwarded.
        phone_rtcp
            .send_to(b"rtcp", rtcp_port(Leg::A))
            .await
            .unwrap();
        phone_rtcp
            .send_to(b"rtcp2", rtcp_port(Leg::A))
            .await
            .unwrap();
        assert_eq!(recv(&b_rtcp).await.as_deref(), Some(&b"rtcp"[..]));
        assert_eq!(recv(&b_rtcp).await.as_deref(), Some(&b"rtcp2"[..]));
        assert_eq!(recv(&b_rtcp).await, None);
    }

    #[tokio::test]
    async fn behind_nat_latches_from_the_signalling_ip() {
        let pool = PortPool::new(LOCAL, 31700, 31709);
        let (s, phone, b) = call(&pool).await;
        // The phone's SDP names its private address, unreachable from here.
        let private: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        s.set_remote(
            Leg::A,
            Some(private),
            Some("10.0.0.5:4001".parse().unwrap()),
        );
        // Until the signalling IP is known its packets are a stranger's.
        phone.send_to(b"early", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await, None);
        s.set_source(Leg::A, Some(LOCAL));
        stranger()
            .await
            .send_to(b"evil", s.local(Leg::A))
            .await
            .unwrap();
        phone.send_to(b"voice", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await.as_deref(), Some(&b"voice"[..]));
        assert_eq!(recv(&b).await, None);
        // Replies go to where its packets come from, not to the private address.
        b.send_to(b"reply", s.local(Leg::B)).await.unwrap();
        assert_eq!(recv(&phone).await.as_deref(), Some(&b"reply"[..]));
    }

    #[tokio::test]
    async fn a_vacated_leg_accepts_nobody_until_the_next_party_is_announced() {
        let pool = PortPool::new(LOCAL, 31800, 31809);
        let (s, phone, b) = call(&pool).await;
        s.set_source(Leg::A, Some(LOCAL));
        phone.send_to(b"v1", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await.as_deref(), Some(&b"v1"[..]));
        s.vacate(Leg::A);
        let stranger = stranger().await;
        stranger.send_to(b"evil", s.local(Leg::A)).await.unwrap();
        phone.send_to(b"gone", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await, None);
        // Nothing latched: B's audio goes nowhere.
        b.send_to(b"hello?", s.local(Leg::B)).await.unwrap();
        assert_eq!(recv(&phone).await, None);
        assert_eq!(recv(&stranger).await, None);
        // The next party (on its own IP) is announced, and latches; the old one stays out.
        let next = UdpSocket::bind("127.0.0.3:0").await.unwrap();
        s.set_remote(Leg::A, Some(next.local_addr().unwrap()), None);
        phone.send_to(b"gone", s.local(Leg::A)).await.unwrap();
        next.send_to(b"v2", s.local(Leg::A)).await.unwrap();
        assert_eq!(recv(&b).await.as_deref(), Some(&b"v2"[..]));
        assert_eq!(recv(&b).await, None);
        b.send_to(b"hello", s.local(Leg::B)).await.unwrap();
        assert_eq!(recv(&next).await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(recv(&phone).await, None);
    }

    #[tokio::test]
    async fn strangers_do_not_keep_a_call_alive() {
        let pool = PortPool::new(LOCAL, 31900, 31909);
        let (s, _phone, b) = call(&pool).await;
        let stranger = stranger().await;
        s.idle();
        for _ in 0..10 {
            stranger.send_to(b"evil", s.local(Leg::A)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(s.idle() >= Duration::from_millis(90));
        assert_eq!(s.packets_from(Leg::A), 0);
        assert_eq!(recv(&b).await, None);
    }

    #[tokio::test]
    async fn placed_ports_are_bound_where_told_reused_while_held_and_closed_when_told() {
        let pool = PortPool::placed(LOCAL);
        let s = Session::open_at(&pool, [32300, 32306]).unwrap();
        assert_eq!(
            (s.local(Leg::A).port(), s.local(Leg::B).port()),
            (32300, 32306)
        );
        assert_eq!((pool.in_use(), pool.bound()), (2, 2));
        drop(s);
        assert_eq!((pool.in_use(), pool.bound()), (0, 2));
        // Held by the pool: a call placed there again gets the same endpoints.
        let s = Session::open_at(&pool, [32306, 32300]).unwrap();
        assert_eq!(pool.bound(), 2);
        drop(s);
        pool.unbind(&[32300, 32306]);
        assert_eq!(pool.bound(), 0);
        // The aborted forwarding tasks drop the last references to the sockets.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for p in 32300..=32307 {
            std::net::UdpSocket::bind(("127.0.0.1", p)).unwrap();
        }
        // A port another process holds: an error, and nothing left bound.
        let _held = std::net::UdpSocket::bind(("127.0.0.1", 32311)).unwrap();
        assert!(matches!(
            Session::open_at(&pool, [32308, 32310]),
            Err(RelayError::Io(_))
        ));
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn forwards_both_ways_with_latching_and_frees_ports() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 31000, 31009);
        assert_eq!(pool.capacity(), 5);
        let s = Session::open(&pool).unwrap();
        assert_eq!(pool.in_use(), 2);
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // B announced its address; A only its signalling IP (latching will learn its port).
        s.set_remote(Leg::B, Some(b.local_addr().unwrap()), None);
        s.set_source(Leg::A, Some(LOCAL));
        a.send_to(b"hello-b", s.local(Leg::A)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello-b");
        assert_eq!(from, s.local(Leg::B));
        b.send_to(b"hello-a", s.local(Leg::B)).await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello-a");
        assert_eq!(from, s.local(Leg::A));
        // A stranger sending to A's endpoint, even from A's IP, is not forwarded.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"evil", s.local(Leg::A)).await.unwrap();
        a.send_to(b"good", s.local(Leg::A)).await.unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"good");
        assert_eq!(s.packets_from(Leg::A), 2);
        // Idle time: grows while nothing arrives, restarts when a packet does.
        s.idle();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(s.idle() >= Duration::from_millis(50));
        a.send_to(b"more", s.local(Leg::A)).await.unwrap();
        b.recv_from(&mut buf).await.unwrap();
        assert!(s.idle() < Duration::from_millis(50));
        let (pa, pb) = (s.local(Leg::A), s.local(Leg::B));
        drop(s);
        assert_eq!(pool.in_use(), 0);
        // Detached at once: packets to the old ports go nowhere.
        a.send_to(b"late", pa).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), b.recv_from(&mut buf))
                .await
                .is_err()
        );
        // A new call right away gets fresh ports; the released ones cool down first.
        let s2 = Session::open(&pool).unwrap();
        assert!(s2.local(Leg::A) != pa && s2.local(Leg::A) != pb);
        drop(s2);
        // Closed after their idle time: the ports really are free for others.
        pool.close_idle(Instant::now() + Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.bound(), 0);
        for p in 31000..=31009 {
            std::net::UdpSocket::bind(("127.0.0.1", p)).unwrap();
        }
    }

    #[tokio::test]
    async fn reuses_cooled_endpoints() {
        let pool = PortPool::with_timing(
            "127.0.0.1".parse().unwrap(),
            31200,
            31209,
            PoolTiming {
                reuse_after: Duration::ZERO,
                close_after: Duration::from_secs(60),
            },
        );
        let s = Session::open(&pool).unwrap();
        let ports = [s.local(Leg::A), s.local(Leg::B)];
        drop(s);
        let s = Session::open(&pool).unwrap();
        // The same two, in either order (picked at random among the cooled ones).
        let mut again = [s.local(Leg::A), s.local(Leg::B)];
        again.sort();
        let mut ports = ports;
        ports.sort();
        assert_eq!(again, ports);
        assert_eq!(pool.bound(), 2);
        // The reused endpoint latches afresh for its new call.
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(Leg::B, Some(b.local_addr().unwrap()), None);
        s.set_source(Leg::A, Some(LOCAL));
        a.send_to(b"x", s.local(Leg::A)).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"x");
    }

    #[tokio::test]
    async fn exhausts_cleanly() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 31100, 31103);
        let _s = Session::open(&pool).unwrap();
        assert!(matches!(Session::open(&pool), Err(RelayError::Exhausted)));
        assert_eq!(pool.in_use(), 2);
    }
}

#[cfg(test)]
mod play_tests {
    use super::*;
    use crate::audio::{builtin_music, rms};

    async fn recv_rtp(sock: &UdpSocket, until: Instant) -> Vec<(Instant, Vec<u8>)> {
        let mut out = vec![];
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(until.into(), sock.recv_from(&mut buf)).await
        {
            out.push((Instant::now(), buf[..n].to_vec()));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn music_at_50_packets_per_second_then_bridged_again() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 31300, 31309);
        let s = Session::open(&pool).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(Leg::A, Some(a.local_addr().unwrap()), None);
        s.set_remote(Leg::B, Some(b.local_addr().unwrap()), None);
        s.play(Leg::A, Arc::new(builtin_music()), Codec::Pcma, 8, true);
        // B talks meanwhile: A must hear only the music.
        b.send_to(b"voice", s.local(Leg::B)).await.unwrap();
        let got = recv_rtp(&a, Instant::now() + Duration::from_secs(2)).await;
        let n = got.len() as f64 / 2.0;
        assert!((47.5..=52.5).contains(&n), "{n} packets/s");
        let pkts: Vec<_> = got
            .iter()
            .map(|(_, p)| rtp_rs::RtpReader::new(p).unwrap())
            .collect();
        assert!(pkts[0].mark() && pkts.iter().skip(1).all(|p| !p.mark()));
        for w in pkts.windows(2) {
            assert_eq!(w[1].ssrc(), w[0].ssrc());
            assert_eq!(
                u16::from(w[1].sequence_number()),
                u16::from(w[0].sequence_number()).wrapping_add(1)
            );
            assert_eq!(w[1].timestamp(), w[0].timestamp().wrapping_add(160));
        }
        assert!(pkts
            .iter()
            .all(|p| p.payload_type() == 8 && p.payload().len() == 160));
        let level: f64 = pkts
            .iter()
            .map(|p| rms(Codec::Pcma, p.payload()))
            .sum::<f64>()
            / pkts.len() as f64;
        assert!(level > 500.0, "music level {level}");
        // Bridged again: the music stops and B's audio arrives.
        s.bridge(Leg::A);
        tokio::time::sleep(Duration::from_millis(60)).await;
        while a.try_recv_from(&mut [0u8; 512]).is_ok() {}
        b.send_to(b"voice2", s.local(Leg::B)).await.unwrap();
        let got = recv_rtp(&a, Instant::now() + Duration::from_millis(300)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"voice2");
        let (cpu, sent) = pool.player_usage();
        assert!(sent >= 90 && cpu < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn telephone_events_are_reported_once() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 31400, 31409);
        let s = Session::open(&pool).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        s.on_dtmf(Arc::new(move |leg, d| {
            let _ = tx.send((leg, d));
        }));
        s.set_dtmf(Leg::B, Some(101));
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(Leg::B, Some(b.local_addr().unwrap()), None);
        let event = |digit: u8, end: bool, ts: u32, seq: u16| {
            let payload = [digit, if end { 0x80 } else { 0 } | 10, 0, 160];
            rtp_rs::RtpPacketBuilder::new()
                .payload_type(101)
                .ssrc(7)
                .sequence(rtp_rs::Seq::from(seq))
                .timestamp(ts)
                .payload(&payload)
                .build()
                .unwrap()
        };
        let mut seq = 0;
        for (digit, ts) in [(10u8, 1000u32), (6, 2000), (8, 3000)] {
            for end in [false, false, true, true, true] {
                seq += 1;
                b.send_to(&event(digit, end, ts, seq), s.local(Leg::B))
                    .await
                    .unwrap();
            }
        }
        // Voice with another payload type is not an event.
        let voice = rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .payload(&[1u8; 160])
            .build()
            .unwrap();
        b.send_to(&voice, s.local(Leg::B)).await.unwrap();
        let mut got = String::new();
        while got.len() < 3 {
            let (leg, d) = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(leg, Leg::B);
            got.push(d);
        }
        assert_eq!(got, "*68");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "an event was reported twice");
    }
}
