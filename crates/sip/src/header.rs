//! Typed views of the headers the stack reasons about. Each borrows from the message text.

use crate::message::is_token;
use crate::uri::split_hostport;
use crate::Method;

/// Iterate `;name=value` parameters (values may be quoted).
pub fn params(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(';').skip(1).filter_map(|kv| {
        let kv = kv.trim();
        if kv.is_empty() {
            return None;
        }
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        Some((k.trim(), v.trim()))
    })
}

fn param<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    params(s)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// `SIP/2.0/UDP host:port;params`.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a str) -> Option<Via<'a>> {
        let (proto, rest) = v.split_once('/')?;
        if !proto.trim().eq_ignore_ascii_case("SIP") {
            return None;
        }
        let (ver, rest) = rest.split_once('/')?;
        if ver.trim() != "2.0" {
            return None;
        }
        let rest = rest.trim_start();
        let t_end = rest.find([' ', '\t'])?;
        let transport = &rest[..t_end];
        if !is_token(transport) {
            return None;
        }
        let sent = rest[t_end..].trim_start();
        let p = sent.find(';').unwrap_or(sent.len());
        let hostport = sent[..p].trim();
        // "host : port" with whitespace around the colon is legal (RFC 4475 3.1.1.1).
        let (host, port) = if hostport.starts_with('[') {
            split_hostport(hostport)?
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => {
                    let (h, p) = (h.trim(), p.trim());
                    split_hostport(h)?;
                    if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
                        return None;
                    }
                    (h, Some(p.parse().ok()?))
                }
                None => split_hostport(hostport)?,
            }
        };
        let params = &sent[p..];
        for (k, _) in super::header::params(params) {
            if !is_token(k) {
                return None;
            }
        }
        Some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&'a str> {
        param(self.params, "branch")
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }

    /// `sent-by`, the identity part of a server transaction key (RFC 3261 §17.2.3).
    pub fn sent_by(&self) -> (&'a str, u16) {
        (self.host, self.port.unwrap_or(5060))
    }
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route, Refer-To, …).
#[derive(Debug, Clone, Copy)]
pub struct NameAddr<'a> {
    pub display: Option<&'a str>,
    pub uri: &'a str,
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a str) -> Option<NameAddr<'a>> {
        let v = v.trim();
        if let Some(lt) = find_unquoted(v, b'<') {
            let display = v[..lt].trim();
            if display.starts_with('"') {
                if display.len() < 2 || !display.ends_with('"') {
                    return None;
                }
            } else if !display.is_empty()
                && !display
                    .split_whitespace()
                    .all(|w| is_token(w) || !w.is_ascii())
            {
                return None;
            }
            let rest = &v[lt + 1..];
            let gt = rest.find('>')?;
            let uri = &rest[..gt];
            if uri.is_empty() || uri.contains([' ', '<']) {
                return None;
            }
            crate::uri::Uri::validate(uri).ok()?;
            let params = rest[gt + 1..].trim();
            if !params.is_empty() && !params.starts_with(';') {
                return None;
            }
            Some(NameAddr {
                display: (!display.is_empty()).then_some(display),
                uri,
                params,
            })
        } else {
            // addr-spec: parameters after the URI belong to the header, not the URI.
            if v.contains([' ', '"']) && !v.contains(';') {
                return None;
            }
            let end = v.find(';').unwrap_or(v.len());
            let uri = v[..end].trim();
            if uri.contains([' ', '"', '?']) {
                return None;
            }
            crate::uri::Uri::validate(uri).ok()?;
            Some(NameAddr {
                display: None,
                uri,
                params: &v[end..],
            })
        }
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }
}

fn find_unquoted(s: &str, c: u8) -> Option<usize> {
    let mut quoted = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            x if x == c && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(v: &str) -> Option<CSeq> {
        let mut it = v.split_whitespace();
        let n = it.next()?;
        let m = it.next()?;
        if it.next().is_some() || n.len() > 10 || !is_token(m) {
            return None;
        }
        let seq: u64 = n.parse().ok()?;
        // RFC 3261 §8.1.1.5: the sequence number must be less than 2**31.
        if seq >= 1 << 31 {
            return None;
        }
        Some(CSeq {
            seq: seq as u32,
            method: Method::from_token(m),
        })
    }
}

/// A delta-seconds value (Expires, `expires=`; RFC 3261 §25.1): digits only, at most
/// 2³²−1. `None` for anything else, so that a bad or huge value is refused rather than read as
/// a default or wrapped.
pub fn delta_seconds(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::try_from(v.parse::<u64>().ok()?).ok()
}

/// The parameters of a Digest `Authorization`/`WWW-Authenticate` value.
pub fn digest_params(v: &str) -> Option<impl Iterator<Item = (&str, &str)>> {
    let v = v.trim_start();
    let scheme_end = v.find([' ', '\t'])?;
    if !v[..scheme_end].eq_ignore_ascii_case("Digest") {
        return None;
    }
    Some(
        crate::message::split_list(&v[scheme_end..]).filter_map(|kv| {
            let (k, val) = kv.split_once('=')?;
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(val);
            Some((k.trim(), val))
        }),
    )
}

/// `Replaces` (RFC 3891): the dialog a request takes the place of, as its sender names it:
/// `to-tag` is the tag of the party the request is sent to (us, in the dialog named), `from-tag`
/// the other party's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
    /// Only an early (ringing, unanswered) dialog may be replaced.
    pub early_only: bool,
}

impl Replaces {
    /// A `Replaces` header value: `call-id;to-tag=..;from-tag=..[;early-only]`.
    pub fn parse(v: &str) -> Option<Replaces> {
        let call_id = v.split(';').next()?.trim();
        if call_id.is_empty() {
            return None;
        }
        let (mut to, mut from, mut early_only) = (None, None, false);
        for (k, val) in params(v) {
            if k.eq_ignore_ascii_case("to-tag") {
                to = Some(val);
            } else if k.eq_ignore_ascii_case("from-tag") {
                from = Some(val);
            } else if k.eq_ignore_ascii_case("early-only") {
                early_only = true;
            }
        }
        Some(Replaces {
            call_id: call_id.to_string(),
            to_tag: to?.to_string(),
            from_tag: from?.to_string(),
            early_only,
        })
    }

    /// The `Replaces` carried in the headers of a Refer-To URI (`sip:x@h?Replaces=...`,
    /// percent-encoded, RFC 3891 §7 and RFC 3515).
    pub fn from_refer_to(uri: &str) -> Option<Replaces> {
        let (_, headers) = uri.split_once('?')?;
        let value = headers.split('&').find_map(|h| {
            let (k, v) = h.split_once('=')?;
            k.eq_ignore_ascii_case("replaces").then_some(v)
        })?;
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()?;
        Replaces::parse(&decoded)
    }
}

/// The URI a REFER refers to, without its header part (`?Replaces=...`).
pub fn refer_target(refer_to: &str) -> Option<&str> {
    let uri = NameAddr::parse(refer_to)?.uri;
    Some(uri.split('?').next().unwrap_or(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.sent_by(), ("10.0.0.1", 5062));
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(v.param("rport"), Some(""));
        let v = Via::parse("SIP / 2.0 / TCP host ;branch=x").unwrap();
        assert_eq!(v.host, "host");
        assert!(Via::parse("SIP/2.0/UDP").is_none());
    }

    #[test]
    fn name_addr() {
        let n = NameAddr::parse("\"A, B\" <sip:a@h;lr>;tag=xy").unwrap();
        assert_eq!(n.display, Some("\"A, B\""));
        assert_eq!(n.uri, "sip:a@h;lr");
        assert_eq!(n.tag(), Some("xy"));
        let n = NameAddr::parse("sip:a@h;tag=1").unwrap();
        assert_eq!(n.uri, "sip:a@h");
        assert_eq!(n.tag(), Some("1"));
        assert!(NameAddr::parse("\"unterminated <sip:a@h>").is_none());
        assert!(NameAddr::parse("<sip:a@h").is_none());
    }

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse("10 INVITE").unwrap().seq, 10);
        assert!(CSeq::parse("2147483648 INVITE").is_none());
        assert!(CSeq::parse("-1 INVITE").is_none());
        assert!(CSeq::parse("1").is_none());
    }

    #[test]
    fn digest() {
        let p: Vec<_> = digest_params(
            "Digest username=\"1001\", realm=\"orbit\", nonce=\"n,1\", uri=\"sip:h\", qop=auth, nc=00000001",
        )
        .unwrap()
        .collect();
        assert_eq!(p[0], ("username", "1001"));
        assert_eq!(p[2], ("nonce", "n,1"));
        assert_eq!(p[5], ("nc", "00000001"));
    }
    #[test]
    fn delta_seconds_refuses_what_is_not_one() {
        assert_eq!(delta_seconds(" 3600 "), Some(3600));
        assert_eq!(delta_seconds("4294967295"), Some(u32::MAX));
        for bad in ["", "-1", "4294967296", "99999999999", "1e3", "60s", "0x10"] {
            assert_eq!(delta_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn replaces_in_a_header_and_in_a_refer_to() {
        let r = Replaces::parse("abc@h;to-tag=t1;from-tag=f1;early-only").unwrap();
        assert_eq!(
            (
                r.call_id.as_str(),
                r.to_tag.as_str(),
                r.from_tag.as_str(),
                r.early_only
            ),
            ("abc@h", "t1", "f1", true)
        );
        assert!(Replaces::parse("abc;to-tag=t1").is_none());
        let uri = "<sip:700@h?Replaces=abc%40h%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>";
        let inner = NameAddr::parse(uri).unwrap().uri;
        let r = Replaces::from_refer_to(inner).unwrap();
        assert_eq!((r.call_id.as_str(), r.early_only), ("abc@h", false));
        assert_eq!(refer_target(uri), Some("sip:700@h"));
        assert!(Replaces::from_refer_to("sip:700@h?Replaces=%ZZ").is_none());
    }
}
