//! Stream transports (TCP, TLS): accept connections, frame messages by Content-Length, and hand
//! them to the owner through one channel. UDP needs no framing; its owner reads the socket
//! itself so that the hot path has no channel hop.
//!
//! Each connection gets an id; the owner answers on the same connection (RFC 3261 §18.2.2)
//! through the [`StreamTx`] it received in [`StreamEvent::Opened`].
//!
//! Whatever a peer can make us hold is bounded ([`StreamLimits`]):
//! - slots: `max_connections` per listener, and `max_per_ip` from one source address, so that
//!   one host cannot take every slot. The per-address count has an entry only while that
//!   address has a connection open, so it never holds more than `max_connections` entries.
//! - time: a connection must deliver one complete message within `first_message` of its
//!   accept, TLS handshake included, or it is closed: a socket that connects and stays
//!   silent, or sends one byte at a time, cannot sit on a slot for the long `idle` timeout
//!   that registered phones need between their messages.
//! - memory: the reader buffers at most `max_message` bytes; the write queue holds at most
//!   `write_queue` messages. A peer that stops reading what we send is closed, not buffered
//!   for: a phone that does not read its socket is gone.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::message::{find_head_end, stream_content_length};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    Tls,
}

impl Proto {
    pub fn via_name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }

    pub fn reliable(self) -> bool {
        self != Proto::Udp
    }
}

/// Where a message came from, and so where its answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// Connection id for TCP/TLS; 0 for UDP.
    pub conn: u64,
}

#[derive(Debug)]
pub enum StreamEvent {
    Opened {
        flow: Flow,
        tx: StreamTx,
    },
    Message {
        flow: Flow,
        bytes: Bytes,
    },
    /// A framing error: the stream is closed after this (RFC 3261 §18.3).
    Bad {
        flow: Flow,
        bytes: Bytes,
    },
    Closed {
        flow: Flow,
    },
}

/// The owner's handle on one connection: queue messages to write, or close it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamTx {
    tx: mpsc::Sender<Bytes>,
    close: Arc<Notify>,
}

/// Why [`StreamTx::try_send`] queued nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The write queue was full (the peer does not read): the connection is being closed.
    Full,
    /// The connection has ended.
    Closed,
}

impl StreamTx {
    /// Queue `bytes` for writing, without waiting. When the queue is full the peer has stopped
    /// reading: the connection is closed (its `Closed` event follows) rather than buffered for.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), SendError> {
        match self.tx.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close();
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Close the connection: what is still queued is dropped.
    pub fn close(&self) {
        self.close.notify_one();
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_message: usize,
    /// Longest silence between reads, once the connection has delivered a message.
    pub idle: Duration,
    /// Time from accept (TLS handshake included) to the first complete message; a connection
    /// without one by then is closed.
    pub first_message: Duration,
    /// Most open connections per listener; more are closed on accept.
    pub max_connections: usize,
    /// Most open connections per listener from one source IP; more are closed on accept.
    pub max_per_ip: usize,
    /// Messages waiting to be written on one connection; one more closes it.
    pub write_queue: usize,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// The key a source address is counted under (connections, request rates, failed digests): an
/// IPv4 address (also one seen as `::ffff:a.b.c.d` on a dual-stack socket), or an IPv6 /64. A
/// host on IPv6 usually has a whole /64 to pick addresses from, so counting its addresses one
/// by one would let it through every per-source bound; a site's phones in one /64 count
/// together, as phones behind one IPv4 NAT do.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

fn next_conn() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// Open connections per source IP. An address has an entry only while it has a connection
/// open (the entry goes at zero), so the table is bounded by the open connections.
#[derive(Debug)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One connection's place in [`PerIp`], given back on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Entry::Occupied(mut e) = open.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Accept TCP connections (TLS when an acceptor is given) and run each as a framed stream.
/// Beyond `limits.max_connections` open ones, or `limits.max_per_ip` from the same address,
/// new connections are closed at once.
pub fn spawn_stream_listener(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: mpsc::Sender<StreamEvent>,
    limits: StreamLimits,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_ip = PerIp::new(limits.max_per_ip);
    tokio::spawn(async move {
        loop {
            let (sock, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let deadline = Instant::now() + limits.first_message;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%addr, "too many connections; closing");
                continue;
            };
            let Some(ip_slot) = per_ip.acquire(addr.ip()) else {
                debug!(%addr, "too many connections from this address; closing");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let (tls, events) = (tls.clone(), events.clone());
            tokio::spawn(async move {
                let proto = if tls.is_some() {
                    Proto::Tls
                } else {
                    Proto::Tcp
                };
                let flow = Flow {
                    proto,
                    addr,
                    conn: next_conn(),
                };
                match tls {
                    None => run_stream(sock, flow, events, limits, deadline).await,
                    Some(acceptor) => {
                        let hs = tokio::time::timeout_at(deadline, acceptor.accept(sock));
                        match hs.await {
                            Ok(Ok(stream)) => {
                                run_stream(stream, flow, events, limits, deadline).await
                            }
                            Ok(Err(e)) => debug!(%addr, error = %e, "tls handshake failed"),
                            Err(_) => debug!(%addr, "tls handshake timed out"),
                        }
                    }
                }
                drop((permit, ip_slot));
            });
        }
    })
}

/// Run one connection until the peer closes it, it breaks a limit, or the owner closes it.
/// `first_by` is when the first complete message must have arrived.
async fn run_stream<S>(
    stream: S,
    flow: Flow,
    events: mpsc::Sender<StreamEvent>,
    limits: StreamLimits,
    first_by: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(limits.write_queue.max(1));
    let tx = StreamTx {
        tx,
        close: Arc::new(Notify::new()),
    };
    if events
        .send(StreamEvent::Opened {
            flow,
            tx: tx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut framer = Framer::new(limits.max_message);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut delivered = false;
    'conn: loop {
        let until = if delivered {
            Instant::now() + limits.idle
        } else {
            first_by
        };
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tokio::time::sleep_until(until) => {
                debug!(addr = %flow.addr, first = !delivered, "stream timed out; closing");
                break;
            }
            _ = tx.close.notified() => {
                debug!(addr = %flow.addr, "stream closed by its owner");
                break;
            }
        };
        framer.push(&chunk[..n]);
        loop {
            match framer.next_frame() {
                Frame::Need => break,
                Frame::KeepAlive => {
                    // RFC 5626 §3.5.1: answer a double-CRLF ping with a single CRLF pong.
                    let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                }
                Frame::Message(bytes) => {
                    delivered = true;
                    if events
                        .send(StreamEvent::Message { flow, bytes })
                        .await
                        .is_err()
                    {
                        break 'conn;
                    }
                }
                Frame::Bad(bytes) => {
                    let _ = events.send(StreamEvent::Bad { flow, bytes }).await;
                    // Give the owner a moment to answer 400 before the stream closes.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break 'conn;
                }
            }
        }
    }
    drop(tx);
    let _ = events.send(StreamEvent::Closed { flow }).await;
    writer.abort();
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Need,
    KeepAlive,
    Message(Bytes),
    /// Unframeable: no or bad Content-Length, or over the size limit. Carries the header
    /// section so the owner can try to answer 400/513.
    Bad(Bytes),
}

/// Splits a byte stream into SIP messages by Content-Length (RFC 3261 §18.3).
pub struct Framer {
    buf: BytesMut,
    max: usize,
}

impl Framer {
    pub fn new(max: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(4096),
            max,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn next_frame(&mut self) -> Frame {
        if self.buf.starts_with(b"\r\n\r\n") {
            let _ = self.buf.split_to(4);
            return Frame::KeepAlive;
        }
        while self.buf.starts_with(b"\r\n") {
            let _ = self.buf.split_to(2);
        }
        let Some(head_end) = find_head_end(&self.buf) else {
            if self.buf.len() > self.max {
                let b = self.buf.split().freeze();
                return Frame::Bad(b);
            }
            return Frame::Need;
        };
        let cl = match stream_content_length(&self.buf[..head_end]) {
            Ok(n) => n,
            Err(_) => return Frame::Bad(self.buf.split().freeze()),
        };
        // Checked: a hostile Content-Length can be near usize::MAX.
        if head_end.saturating_add(cl) > self.max {
            return Frame::Bad(self.buf.split_to(head_end).freeze());
        }
        if self.buf.len() < head_end + cl {
            return Frame::Need;
        }
        Frame::Message(self.buf.split_to(head_end + cl).freeze())
    }
}

/// Send `msgs` (destination, bytes) from the UDP socket `fd` in one system call where the
/// platform has `sendmmsg` (Linux), without blocking. Returns how many were sent, in order;
/// the rest (a full send buffer) are the caller's to retry. A quarter of the edge's CPU at
/// thousands of calls/s was `sendto`, one call per datagram.
#[cfg(target_os = "linux")]
pub fn send_batch(fd: std::os::fd::RawFd, msgs: &[(SocketAddr, &[u8])]) -> std::io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let addrs: Vec<socket2::SockAddr> = msgs.iter().map(|(a, _)| (*a).into()).collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(_, b)| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let iov = iovs.as_mut_ptr();
    let mut hdrs: Vec<libc::mmsghdr> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = a.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = a.len();
            // SAFETY: `i` < iovs.len(); iovs outlives the call below.
            h.msg_hdr.msg_iov = unsafe { iov.add(i) };
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let n = hdrs.len().min(1024) as libc::c_uint;
    // SAFETY: every header points into `addrs` and `iovs`, alive until this returns; the
    // kernel reads them and writes only `msg_len`.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Bind a UDP socket with large buffers (SIP bursts at thousands of calls/s overflow the
/// default 208 KiB receive buffer).
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Shared TLS server settings built from a certificate chain and key.
pub fn tls_acceptor(
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length() {
        let mut f = Framer::new(4096);
        let m1 = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        let m2 = b"OPTIONS sip:b SIP/2.0\r\nl: 0\r\n\r\n";
        f.push(b"\r\n\r\n");
        f.push(&m1[..10]);
        assert_eq!(f.next_frame(), Frame::KeepAlive);
        assert_eq!(f.next_frame(), Frame::Need);
        f.push(&m1[10..]);
        f.push(m2);
        assert_eq!(f.next_frame(), Frame::Message(Bytes::from_static(m1)));
        assert_eq!(f.next_frame(), Frame::Message(Bytes::from_static(m2)));
        assert_eq!(f.next_frame(), Frame::Need);
    }

    #[test]
    fn huge_content_length_is_rejected_not_overflowed() {
        let mut f = Framer::new(4096);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert!(matches!(f.next_frame(), Frame::Bad(_)));
    }

    #[test]
    fn per_ip_table_caps_each_address_and_forgets_it_at_zero() {
        let t = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let a1 = t.acquire(a).unwrap();
        let a2 = t.acquire(a).unwrap();
        assert!(t.acquire(a).is_none(), "a third from the same address");
        // A v4 peer seen on a dual-stack socket is the same address.
        assert!(t.acquire("::ffff:10.0.0.1".parse().unwrap()).is_none());
        let b1 = t.acquire("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(t.entries(), 2);
        drop(a1);
        let a3 = t.acquire(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(t.entries(), 0, "no entry outlives its connections");
        let none = PerIp::new(0);
        assert!(none.acquire(a).is_none());
        assert_eq!(none.entries(), 0, "a refused address leaves no entry");
    }

    #[test]
    fn per_ip_table_counts_an_ipv6_slash_64_as_one_source() {
        let t = PerIp::new(2);
        let _a = t.acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _b = t.acquire("2001:db8:1:2:ffff::7".parse().unwrap()).unwrap();
        assert!(
            t.acquire("2001:db8:1:2:abcd:1:2:3".parse().unwrap())
                .is_none(),
            "a third address of the same /64"
        );
        assert!(
            t.acquire("2001:db8:1:3::1".parse().unwrap()).is_some(),
            "another /64"
        );
    }

    #[test]
    fn rejects_missing_length_and_oversize() {
        let mut f = Framer::new(64);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n");
        assert!(matches!(f.next_frame(), Frame::Bad(_)));
        let mut f = Framer::new(64);
        f.push(&[b'A'; 100]);
        assert!(matches!(f.next_frame(), Frame::Bad(_)));
    }
}
