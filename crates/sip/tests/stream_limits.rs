//! The stream listener's bounds, over real loopback sockets: connections per source address,
//! the deadline for a connection's first message (TLS handshake included), and the write
//! queue of a peer that does not read.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use orbit_sip::transport::{
    spawn_stream_listener, tls_acceptor, Flow, SendError, StreamEvent, StreamLimits, StreamTx,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

fn limits() -> StreamLimits {
    StreamLimits {
        max_message: 16 * 1024,
        idle: Duration::from_secs(60),
        first_message: Duration::from_secs(10),
        max_connections: 100,
        max_per_ip: 32,
        write_queue: 256,
    }
}

async fn listen(
    limits: StreamLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, mpsc::Receiver<StreamEvent>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(64);
    spawn_stream_listener(l, tls, tx, limits);
    (addr, rx)
}

/// A connection to `to` from the loopback address `ip` (any of 127.0.0.0/8).
async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.unwrap()
}

async fn event(rx: &mut mpsc::Receiver<StreamEvent>, within: Duration) -> Option<StreamEvent> {
    timeout(within, rx.recv()).await.ok().flatten()
}

async fn opened(rx: &mut mpsc::Receiver<StreamEvent>) -> (Flow, StreamTx) {
    match event(rx, Duration::from_secs(2)).await {
        Some(StreamEvent::Opened { flow, tx }) => (flow, tx),
        other => panic!("expected Opened, got {other:?}"),
    }
}

/// Whether the server ended the connection (EOF or reset) within `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1024];
    let end = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

const OPTIONS: &str = "OPTIONS sip:orbit.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nFrom: <sip:1001@orbit.test>;tag=o\r\nTo: <sip:orbit.test>\r\nCall-ID: s1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_closed_and_places_come_back() {
    let (addr, mut ev) = listen(
        StreamLimits {
            max_per_ip: 2,
            ..limits()
        },
        None,
    )
    .await;
    let a1 = connect_from("127.0.0.1", addr).await;
    let (f1, _) = opened(&mut ev).await;
    let _a2 = connect_from("127.0.0.1", addr).await;
    opened(&mut ev).await;
    // A third from the same address is closed at once, and its owner never hears of it.
    let mut a3 = connect_from("127.0.0.1", addr).await;
    assert!(closed_by_server(&mut a3, Duration::from_secs(2)).await);
    assert!(event(&mut ev, Duration::from_millis(200)).await.is_none());
    // Another address has places of its own.
    let mut b1 = connect_from("127.0.0.2", addr).await;
    let (fb, _) = opened(&mut ev).await;
    assert_eq!(fb.addr.ip().to_string(), "127.0.0.2");
    assert!(!closed_by_server(&mut b1, Duration::from_millis(200)).await);
    // A connection that ends gives its place back.
    drop(a1);
    match event(&mut ev, Duration::from_secs(2)).await {
        Some(StreamEvent::Closed { flow }) => assert_eq!(flow, f1),
        other => panic!("expected Closed, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut a4 = connect_from("127.0.0.1", addr).await;
    opened(&mut ev).await;
    assert!(!closed_by_server(&mut a4, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_connection_must_deliver_its_first_message_soon_then_may_stay_idle() {
    let first = Duration::from_millis(300);
    let (addr, mut ev) = listen(
        StreamLimits {
            first_message: first,
            ..limits()
        },
        None,
    )
    .await;
    let t0 = Instant::now();
    let mut silent = connect_from("127.0.0.1", addr).await;
    let (f_silent, _) = opened(&mut ev).await;
    let mut prompt = connect_from("127.0.0.1", addr).await;
    let (f_prompt, _) = opened(&mut ev).await;
    prompt.write_all(OPTIONS.as_bytes()).await.unwrap();
    assert!(matches!(
        event(&mut ev, Duration::from_secs(1)).await,
        Some(StreamEvent::Message { flow, .. }) if flow == f_prompt
    ));
    // One byte every 50 ms: each read comes well within any idle timeout, but the message
    // never completes.
    let slow = connect_from("127.0.0.1", addr).await;
    let (f_slow, _) = opened(&mut ev).await;
    let (mut slow_rd, mut slow_wr) = slow.into_split();
    let dribble = tokio::spawn(async move {
        for b in OPTIONS.as_bytes().iter().take(40) {
            if slow_wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slow_wr
    });
    let mut closed = vec![];
    while let Some(e) = event(&mut ev, Duration::from_millis(1500)).await {
        if let StreamEvent::Closed { flow } = e {
            closed.push((flow, t0.elapsed()));
        }
    }
    let mut flows: Vec<_> = closed.iter().map(|(f, _)| f.conn).collect();
    flows.sort();
    let mut want = vec![f_silent.conn, f_slow.conn];
    want.sort();
    assert_eq!(
        flows, want,
        "the silent and the dribbling one close, not the one that spoke"
    );
    for (f, at) in &closed {
        assert!(
            *at < first + Duration::from_millis(400),
            "{f:?} closed after {at:?}"
        );
    }
    assert!(closed_by_server(&mut silent, Duration::from_millis(100)).await);
    let mut b = [0u8; 16];
    assert!(matches!(slow_rd.read(&mut b).await, Ok(0) | Err(_)));
    drop(dribble.await);
    // The one that delivered a message is past the first deadline and still open.
    assert!(!closed_by_server(&mut prompt, Duration::from_millis(100)).await);
}

/// A self-signed P-256 certificate and key for "localhost", for the TLS listener only (the
/// test's client never gets as far as checking it).
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUDU4KbfyN03oZMQmzqzpvhS0cZx8wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEzMDEzMDIxNloYDzIxMjYxMTA2
MTMwMjE2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQaC9fCtoCZGS+ABMYcgmbPfsKi+dgjG3CG4UsXtpKksGwcscWfkGtX
3WErZbHAjSfIc7fbhzLdJFbdmWbVA79bo2kwZzAdBgNVHQ4EFgQUKNtY/41eIu8N
W+F0+pHzuX/RiRIwHwYDVR0jBBgwFoAUKNtY/41eIu8NW+F0+pHzuX/RiRIwDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
SAAwRQIgMzzhy5cYOxleSCuafXiux9+AIlFZMKifP389Ia/L2H0CIQC6wOCUPIAQ
tX5Vi4k6amFPuIDRd/qzUw+0FDUGA3Gq1A==
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgnyoLGbEzPv7lBRXH
M572zlA6Kkl6Dit3xsi6HEx5I8OhRANCAAQaC9fCtoCZGS+ABMYcgmbPfsKi+dgj
G3CG4UsXtpKksGwcscWfkGtX3WErZbHAjSfIc7fbhzLdJFbdmWbVA79b
-----END PRIVATE KEY-----
";

#[tokio::test]
async fn a_stalled_tls_handshake_counts_against_the_first_message_deadline() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    let acceptor = tls_acceptor(vec![cert], key).unwrap();
    let first = Duration::from_millis(300);
    let (addr, mut ev) = listen(
        StreamLimits {
            first_message: first,
            ..limits()
        },
        Some(acceptor),
    )
    .await;
    // Connects and never sends its ClientHello.
    let t0 = Instant::now();
    let mut c = connect_from("127.0.0.1", addr).await;
    assert!(closed_by_server(&mut c, Duration::from_secs(3)).await);
    let at = t0.elapsed();
    assert!(
        at < first + Duration::from_millis(400),
        "closed after {at:?}"
    );
    assert!(event(&mut ev, Duration::from_millis(50)).await.is_none());
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_closed_not_buffered_for() {
    let (addr, mut ev) = listen(
        StreamLimits {
            write_queue: 4,
            ..limits()
        },
        None,
    )
    .await;
    // Never reads.
    let _c = connect_from("127.0.0.1", addr).await;
    let (flow, tx) = opened(&mut ev).await;
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    // Once the kernel's buffers are full the writer blocks, the queue fills, and the send
    // that finds it full closes the connection. 4096 chunks (256 MiB) would be far beyond.
    let mut full = None;
    for i in 0..4096 {
        match tx.try_send(chunk.clone()) {
            Ok(()) => tokio::task::yield_now().await,
            Err(SendError::Full) => {
                full = Some(i);
                break;
            }
            Err(SendError::Closed) => panic!("closed before the queue filled, after {i}"),
        }
    }
    let sent = full.expect("the write queue never filled");
    match event(&mut ev, Duration::from_secs(1)).await {
        Some(StreamEvent::Closed { flow: f }) => assert_eq!(f, flow),
        other => panic!("expected Closed, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(tx.try_send(chunk), Err(SendError::Closed));
    eprintln!("full after {sent} chunks of 64 KiB (kernel buffers, then 4 queued)");
}
