//! SIP and SIPS URIs (RFC 3261 §19.1); other schemes are kept opaque.

use std::fmt;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed URI")]
pub struct UriError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    /// Any other absolute URI (tel:, urn:, …): accepted by the parser, rejected by the edge with 416.
    Other,
}

/// A parsed URI. The text is kept as written; parts are spans into it.
#[derive(Clone, PartialEq, Eq)]
pub struct Uri {
    text: String,
    pub scheme: Scheme,
    user: Option<Range<usize>>,
    host: Range<usize>,
    pub port: Option<u16>,
    params: Range<usize>,
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Spans of a parsed URI: (scheme, user, host, port, params).
type Spans = (
    Scheme,
    Option<Range<usize>>,
    Range<usize>,
    Option<u16>,
    Range<usize>,
);

impl Uri {
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        let (scheme, user, host, port, params) = Self::spans(s)?;
        Ok(Uri {
            text: s.to_string(),
            scheme,
            user,
            host,
            port,
            params,
        })
    }

    /// Check a URI without keeping it (no allocation).
    pub fn validate(s: &str) -> Result<(), UriError> {
        Self::spans(s).map(|_| ())
    }

    fn spans(s: &str) -> Result<Spans, UriError> {
        let colon = s.find(':').ok_or(UriError)?;
        let scheme_s = &s[..colon];
        if scheme_s.is_empty()
            || !scheme_s.as_bytes()[0].is_ascii_alphabetic()
            || !scheme_s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        {
            return Err(UriError);
        }
        if s.bytes()
            .any(|c| c <= b' ' || c == 0x7f || c == b'<' || c == b'>' || c == b'"')
        {
            return Err(UriError);
        }
        let scheme = if scheme_s.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_s.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else {
            if colon + 1 >= s.len() {
                return Err(UriError);
            }
            return Ok((
                Scheme::Other,
                None,
                colon + 1..s.len(),
                None,
                s.len()..s.len(),
            ));
        };
        let rest_start = colon + 1;
        let rest = &s[rest_start..];
        // userinfo ends at the last '@' before any ';' or '?' in the host part. The user part may
        // itself hold ';' and '?' (RFC 4475 3.1.1.2), so search for '@' first.
        let (user, hostport_start) = match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user_end = userinfo.find(':').unwrap_or(userinfo.len());
                if user_end == 0 || !valid_escapes(userinfo) {
                    return Err(UriError);
                }
                if !userinfo
                    .bytes()
                    .all(|c| is_unreserved(c) || b"%&=+$,;?/:".contains(&c))
                {
                    return Err(UriError);
                }
                (Some(rest_start..rest_start + user_end), rest_start + at + 1)
            }
            None => (None, rest_start),
        };
        let hp = &s[hostport_start..];
        let hp_end = hp.find([';', '?']).unwrap_or(hp.len());
        let hostport = &hp[..hp_end];
        let (host, port) = split_hostport(hostport).ok_or(UriError)?;
        let host_start = hostport_start + (host.as_ptr() as usize - hostport.as_ptr() as usize);
        let params_start = hostport_start + hp_end;
        Ok((
            scheme,
            user,
            host_start..host_start + host.len(),
            port,
            params_start..s.len(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|r| &self.text[r.clone()])
    }

    pub fn host(&self) -> &str {
        &self.text[self.host.clone()]
    }

    /// URI parameters and headers, as written (starting with ';' or '?'), e.g. `;transport=tcp`.
    pub fn params(&self) -> &str {
        &self.text[self.params.clone()]
    }

    /// A URI parameter's value (`Some("")` for a flag parameter).
    pub fn param(&self, name: &str) -> Option<&str> {
        let p = self.params();
        let p = p.split('?').next().unwrap_or("");
        p.split(';').skip(1).find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    pub fn transport(&self) -> Option<&str> {
        self.param("transport")
    }
}

/// Split `host[:port]`, validating the host as a hostname, IPv4 address or bracketed IPv6.
pub fn split_hostport(hp: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &hp[..close + 2];
        let after = &rest[close + 1..];
        if rest[..close].parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    if !host.starts_with('[') {
        if host.is_empty()
            || !host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        {
            return None;
        }
        // A dotted-quad-looking host must be a valid IPv4 address (RFC 4475 3.1.2.x).
        if host.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && host.parse::<std::net::Ipv4Addr>().is_err()
        {
            return None;
        }
    }
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some(p.parse::<u16>().ok()?)
        }
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sip_uris() {
        let u = Uri::parse("sip:1001:secret@example.com:5070;transport=tcp?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user(), Some("1001"));
        assert_eq!(u.host(), "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        let u = Uri::parse("sips:[2001:db8::10]:5061").unwrap();
        assert_eq!(u.host(), "[2001:db8::10]");
        assert_eq!(u.port, Some(5061));
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(Uri::parse("tel:+1234").unwrap().scheme, Scheme::Other);
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in [
            "sip:",
            "sip:@host",
            "sip:user@host:99999",
            "sip:user@host:5x",
            "sip:user@[::1",
            "sip:user@1.2.3.999",
            "sip:us er@host",
            "sip:user@host name",
            "sip:%zz@host",
            "nocolon",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
