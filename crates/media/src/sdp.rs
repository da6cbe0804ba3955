//! SDP (RFC 4566) reading and rewriting for media anchoring: find where a party wants its
//! audio, and point the party's peer at the relay instead. No codec is touched: PCMU, PCMA and
//! telephone-event pass through as offered.

use std::net::{IpAddr, SocketAddr};

use crate::audio::Codec;

/// What one side of a call announced for its (first) audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaInfo {
    /// RTP destination; `None` when the port is 0 or the address is 0.0.0.0 (RFC 2543 hold).
    pub rtp: Option<SocketAddr>,
    /// RTCP destination: `a=rtcp` when present, else RTP port + 1.
    pub rtcp: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not text")]
    Encoding,
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("malformed SDP line: {0}")]
    Line(String),
}

fn conn_addr(line: &str) -> Result<Option<IpAddr>, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut it = line[2..].split_whitespace();
    let (Some("IN"), Some(_), Some(addr)) = (it.next(), it.next(), it.next()) else {
        return Err(SdpError::Line(line.to_string()));
    };
    let addr = addr.split('/').next().unwrap_or(addr);
    match addr.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => Ok(None),
        Ok(ip) => Ok(Some(ip)),
        // A hostname: we never resolve names from a message; treat as no address (latching
        // will find the real one).
        Err(_) => Ok(None),
    }
}

/// Read the first audio stream's addresses.
pub fn media_info(sdp: &[u8]) -> Result<MediaInfo, SdpError> {
    let text = std::str::from_utf8(sdp).map_err(|_| SdpError::Encoding)?;
    let mut session_c: Option<IpAddr> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut port: u16 = 0;
    let mut media_c: Option<Option<IpAddr>> = None;
    let mut rtcp: Option<(u16, Option<IpAddr>)> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                break;
            }
            let mut it = m.split_whitespace();
            if it.next() == Some("audio") {
                port = it
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| SdpError::Line(line.to_string()))?;
                in_audio = true;
                seen_audio = true;
            } else {
                in_audio = false;
            }
        } else if line.starts_with("c=") {
            let addr = conn_addr(line)?;
            if in_audio {
                media_c = Some(addr);
            } else if !seen_audio {
                session_c = addr;
            }
        } else if in_audio {
            if let Some(v) = line.strip_prefix("a=rtcp:") {
                let mut it = v.split_whitespace();
                let p = it.next().and_then(|p| p.parse().ok());
                let addr = match (it.next(), it.next(), it.next()) {
                    (Some("IN"), Some(_), Some(a)) => a.parse().ok(),
                    _ => None,
                };
                if let Some(p) = p {
                    rtcp = Some((p, addr));
                }
            }
        }
    }
    if !seen_audio {
        return Err(SdpError::NoAudio);
    }
    let ip = media_c.unwrap_or(session_c);
    let rtp = match (ip, port) {
        (Some(ip), p) if p != 0 => Some(SocketAddr::new(ip, p)),
        _ => None,
    };
    let rtcp = rtp.map(|r| match rtcp {
        Some((p, a)) => SocketAddr::new(a.unwrap_or(r.ip()), p),
        None => SocketAddr::new(r.ip(), r.port().wrapping_add(1)),
    });
    Ok(MediaInfo { rtp, rtcp })
}

/// Rewrite an SDP so that its audio goes to `relay` (RTP port; RTCP is port + 1). The origin
/// line's version is left to the caller's SDP (we do not alter session identity); `c=` lines and
/// the audio `m=` port and `a=rtcp` are replaced. Other media streams are disabled (port 0),
/// since only audio is anchored.
pub fn rewrite(sdp: &[u8], relay: SocketAddr) -> Result<Vec<u8>, SdpError> {
    let text = std::str::from_utf8(sdp).map_err(|_| SdpError::Encoding)?;
    let ip = relay.ip();
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(text.len() + 32);
    let mut in_audio = false;
    let mut done_audio = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("m=") {
            // Split as the readers do (any white space), so that what the other party is
            // offered has the same formats the reader saw (a tab between fields once lost one).
            let mut parts = rest.split_whitespace();
            let kind = parts.next().unwrap_or("");
            let port = parts.next().unwrap_or("0");
            let tail = parts.collect::<Vec<_>>().join(" ");
            if kind == "audio" && !done_audio {
                in_audio = true;
                done_audio = true;
                let p = if port.split('/').next() == Some("0") {
                    0
                } else {
                    relay.port()
                };
                out.push_str(&format!("m=audio {p} {tail}\r\n"));
            } else {
                in_audio = false;
                out.push_str(&format!("m={kind} 0 {tail}\r\n"));
            }
            continue;
        }
        if line.starts_with("c=") {
            // Keep RFC 2543 hold (0.0.0.0) visible to the peer.
            let held = conn_addr(line)?.is_none() && line.contains("0.0.0.0");
            let addr = if held {
                "0.0.0.0".to_string()
            } else {
                ip.to_string()
            };
            out.push_str(&format!("c=IN {fam} {addr}\r\n"));
            continue;
        }
        if in_audio && line.starts_with("a=rtcp:") {
            out.push_str(&format!("a=rtcp:{} IN {fam} {}\r\n", relay.port() + 1, ip));
            continue;
        }
        if line.starts_with("a=candidate") || line.starts_with("a=ice-") {
            // ICE candidates would route around the relay.
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !done_audio {
        return Err(SdpError::NoAudio);
    }
    Ok(out.into_bytes())
}

/// The payload formats of the first audio stream, in the order the party prefers them, as
/// (payload type, encoding name): static types named by RFC 3551, dynamic ones by `a=rtpmap`.
pub fn formats(sdp: &[u8]) -> Result<Vec<(u8, String)>, SdpError> {
    let text = std::str::from_utf8(sdp).map_err(|_| SdpError::Encoding)?;
    let mut out: Vec<(u8, String)> = vec![];
    let mut in_audio = false;
    let mut seen = false;
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if seen {
                break;
            }
            let mut it = m.split_whitespace();
            in_audio = it.next() == Some("audio");
            if in_audio {
                seen = true;
                for pt in it.skip(2).filter_map(|p| p.parse::<u8>().ok()) {
                    let name = match pt {
                        0 => "PCMU",
                        8 => "PCMA",
                        9 => "G722",
                        18 => "G729",
                        _ => "",
                    };
                    out.push((pt, name.to_string()));
                }
            }
        } else if in_audio {
            if let Some(v) = line.strip_prefix("a=rtpmap:") {
                let mut it = v.split_whitespace();
                let pt = it.next().and_then(|p| p.parse::<u8>().ok());
                let name = it.next().and_then(|n| n.split('/').next());
                if let (Some(pt), Some(name)) = (pt, name) {
                    if let Some(f) = out.iter_mut().find(|f| f.0 == pt) {
                        f.1 = name.to_string();
                    }
                }
            }
        }
    }
    if !seen {
        return Err(SdpError::NoAudio);
    }
    Ok(out)
}

/// The same session description with its first audio stream's formats cut down to `keep`
/// (payload types), their `a=rtpmap`/`a=fmtp` lines with them: an answer, or an offer, that
/// leaves the other party no codec but the one chosen.
pub fn only(sdp: &[u8], keep: &[u8]) -> Result<Vec<u8>, SdpError> {
    let text = std::str::from_utf8(sdp).map_err(|_| SdpError::Encoding)?;
    let mut out = String::with_capacity(text.len());
    let (mut in_audio, mut seen) = (false, false);
    let kept = |v: &str| {
        v.split([' ', '\t'])
            .next()
            .and_then(|pt| pt.parse::<u8>().ok())
            .is_some_and(|pt| keep.contains(&pt))
    };
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split_whitespace();
            let kind = it.next().unwrap_or("");
            in_audio = kind == "audio" && !seen;
            if in_audio {
                seen = true;
                let port = it.next().unwrap_or("0");
                let proto = it.next().unwrap_or("RTP/AVP");
                let fmts: Vec<&str> = it
                    .filter(|f| f.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)))
                    .collect();
                out.push_str(&format!("m=audio {port} {proto} {}\r\n", fmts.join(" ")));
                continue;
            }
        } else if in_audio {
            let attr = line
                .strip_prefix("a=rtpmap:")
                .or_else(|| line.strip_prefix("a=fmtp:"));
            if attr.is_some_and(|v| !kept(v)) {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !seen {
        return Err(SdpError::NoAudio);
    }
    Ok(out.into_bytes())
}

/// The G.711 codec (and its payload type) a party lists first.
pub fn g711(sdp: &[u8]) -> Option<(Codec, u8)> {
    formats(sdp)
        .ok()?
        .iter()
        .find_map(|(pt, n)| Codec::from_name(n).map(|c| (c, *pt)))
}

/// The payload type a party uses for RFC 4733 telephone-events.
pub fn telephone_event(sdp: &[u8]) -> Option<u8> {
    formats(sdp)
        .ok()?
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case("telephone-event"))
        .map(|(pt, _)| *pt)
}

/// A session description of our own (the edge playing or answering itself): one audio stream
/// at `addr` with `codec` as `pt`, and telephone-events when `te` is given.
pub fn ours(addr: SocketAddr, version: u64, codec: Codec, pt: u8, te: Option<u8>) -> Vec<u8> {
    let fam = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip();
    let port = addr.port();
    let name = codec.name();
    let mut s = format!(
        "v=0\r\no=orbit {version} {version} IN {fam} {ip}\r\ns=orbit\r\nc=IN {fam} {ip}\r\nt=0 0\r\n"
    );
    match te {
        Some(te) => s.push_str(&format!(
            "m=audio {port} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
        )),
        None => s.push_str(&format!("m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\n")),
    }
    s.push_str("a=sendrecv\r\na=ptime:20\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_keeps_the_formats_whatever_white_space_separates_them() {
        // Found by the fuzzer: fields separated by other white space than one space.
        let sdp = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000\t\x0cRTP/AVP  0 8\r\n";
        let out = rewrite(sdp, "192.0.2.1:40000".parse().unwrap()).unwrap();
        assert_eq!(formats(&out).unwrap(), formats(sdp).unwrap());
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("m=audio 40000 RTP/AVP 0 8\r\n"));
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:4005\r\na=sendonly\r\nm=video 5000 RTP/AVP 96\r\n";

    #[test]
    fn reads_audio_addresses() {
        let m = media_info(OFFER.as_bytes()).unwrap();
        assert_eq!(m.rtp, Some("10.0.0.5:4000".parse().unwrap()));
        assert_eq!(m.rtcp, Some("10.0.0.5:4005".parse().unwrap()));
        let hold = OFFER.replace("c=IN IP4 10.0.0.5", "c=IN IP4 0.0.0.0");
        assert_eq!(media_info(hold.as_bytes()).unwrap().rtp, None);
        assert_eq!(
            media_info(b"v=0\r\nm=video 1 RTP/AVP 96\r\n"),
            Err(SdpError::NoAudio)
        );
    }

    #[test]
    fn rewrites_to_relay() {
        let out = rewrite(OFFER.as_bytes(), "127.0.0.1:20002".parse().unwrap()).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(out.contains("m=audio 20002 RTP/AVP 0 8 101\r\n"));
        assert!(out.contains("a=rtcp:20003 IN IP4 127.0.0.1\r\n"));
        assert!(out.contains("a=sendonly\r\n"));
        assert!(out.contains("a=rtpmap:101 telephone-event/8000"));
        assert!(out.contains("m=video 0 RTP/AVP 96"));
        assert!(!out.contains("10.0.0.5\r\nt="));
        let m = media_info(out.as_bytes()).unwrap();
        assert_eq!(m.rtp, Some("127.0.0.1:20002".parse().unwrap()));
    }

    #[test]
    fn formats_and_our_own_sdp() {
        let f = formats(OFFER.as_bytes()).unwrap();
        assert_eq!(
            f,
            vec![
                (0, "PCMU".into()),
                (8, "PCMA".into()),
                (101, "telephone-event".into())
            ]
        );
        assert_eq!(g711(OFFER.as_bytes()), Some((Codec::Pcmu, 0)));
        assert_eq!(telephone_event(OFFER.as_bytes()), Some(101));
        let alaw = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 96 8");
        assert_eq!(g711(alaw.as_bytes()), Some((Codec::Pcma, 8)));
        assert_eq!(telephone_event(alaw.as_bytes()), None);
        let o = ours(
            "127.0.0.1:20000".parse().unwrap(),
            7,
            Codec::Pcma,
            8,
            Some(101),
        );
        let m = media_info(&o).unwrap();
        assert_eq!(m.rtp, Some("127.0.0.1:20000".parse().unwrap()));
        assert_eq!(g711(&o), Some((Codec::Pcma, 8)));
        assert_eq!(telephone_event(&o), Some(101));
    }

    #[test]
    fn only_keeps_the_chosen_formats_and_their_attributes() {
        let offer = b"v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let cut = only(offer, &[0, 101]).unwrap();
        let text = String::from_utf8(cut.clone()).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(
            !text.contains("G722") && text.contains("a=fmtp:101 0-16"),
            "{text}"
        );
        assert!(
            text.contains("a=sendrecv") && text.contains("a=rtpmap:96 H264"),
            "{text}"
        );
        let f = formats(&cut).unwrap();
        assert_eq!(f, vec![(0, "PCMU".into()), (101, "telephone-event".into())]);
        assert!(only(b"v=0\r\n", &[0]).is_err());
    }
}
