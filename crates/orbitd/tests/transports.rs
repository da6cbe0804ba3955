//! SIP over TCP (SIPp) and TLS (a rustls client) against the real daemon.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn tcp_caller_reaches_udp_callee_with_media_relayed() {
    let d = Daemon::start();
    let c = relayed_call(&d, &["-t", "t1", "-d", "2000"], 25);
    assert_eq!((c.caller_got.packets, c.callee_got.packets), (25, 25));
    assert!(c.uac.ok(), "TCP caller: {}", c.uac.errors);
    assert!(c.uas.ok(), "callee: {}", c.uas.errors);
}

/// Accepts the test's self-signed certificate (the test checks transport, not PKI).
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read_response(tls: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut chunk).expect("read over TLS");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).to_string()
}

#[test]
fn tls_register_is_challenged_and_options_answered() {
    let d = Daemon::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(d.tls).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let reg = "REGISTER sips:orbit.local SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKtls1\r\nMax-Forwards: 70\r\nFrom: <sips:1001@orbit.local>;tag=t\r\nTo: <sips:1001@orbit.local>\r\nCall-ID: tls-1\r\nCSeq: 1 REGISTER\r\nContact: <sips:1001@127.0.0.1:1>\r\nContent-Length: 0\r\n\r\n";
    tls.write_all(reg.as_bytes()).unwrap();
    let r = read_response(&mut tls);
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    assert!(r.contains("WWW-Authenticate: Digest"), "{r}");
    let opt = "OPTIONS sips:orbit.local SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKtls2\r\nMax-Forwards: 70\r\nFrom: <sips:1001@orbit.local>;tag=t\r\nTo: <sips:orbit.local>\r\nCall-ID: tls-2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    tls.write_all(opt.as_bytes()).unwrap();
    let r = read_response(&mut tls);
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    // Bad framing (no Content-Length on a stream) gets 400, then the stream closes.
    let bad = "OPTIONS sips:orbit.local SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKtls3\r\nMax-Forwards: 70\r\nFrom: <sips:1001@orbit.local>;tag=t\r\nTo: <sips:orbit.local>\r\nCall-ID: tls-3\r\nCSeq: 1 OPTIONS\r\n\r\n";
    tls.write_all(bad.as_bytes()).unwrap();
    let r = read_response(&mut tls);
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
}
