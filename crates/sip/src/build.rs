//! Building the messages a UA answers with or sends on its own: responses (RFC 3261 §8.2.6),
//! the ACK of a failed INVITE (§17.1.1.3), CANCEL (§9.1), and the 400/505 for a request the
//! strict parser refused. Requests inside a dialog are built by [`crate::dialog::Dialog`].
//!
//! ```text
//! let bytes = Response::to(&req, 200).tag(&tag).header("Contact", &c).sdp(&body).encode(source);
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::header::Via;
use crate::message::{split_list, Limits, Message, Name, Writer};
use crate::transport::Proto;
use crate::{reason_phrase, Method};

/// Our own address per transport: what goes in Via and Contact.
#[derive(Debug, Clone, Default)]
pub struct Local {
    addrs: HashMap<Proto, SocketAddr>,
    /// Each address as text, formatted once (a Contact or Via goes into most messages).
    text: HashMap<Proto, String>,
}

impl Local {
    pub fn new(addrs: HashMap<Proto, SocketAddr>) -> Local {
        let text = addrs.iter().map(|(p, a)| (*p, a.to_string())).collect();
        Local { addrs, text }
    }

    /// Our address for `proto` (UDP's when we have no listener of that transport).
    pub fn addr(&self, proto: Proto) -> SocketAddr {
        self.addrs
            .get(&proto)
            .or_else(|| self.addrs.get(&Proto::Udp))
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    /// [`Local::addr`] as text.
    fn addr_text(&self, proto: Proto) -> &str {
        self.text
            .get(&proto)
            .or_else(|| self.text.get(&Proto::Udp))
            .map_or("127.0.0.1:5060", String::as_str)
    }

    /// Whether `ip` is one of ours.
    pub fn has_ip(&self, ip: std::net::IpAddr) -> bool {
        self.addrs.values().any(|l| l.ip() == ip)
    }

    /// A Via for a request we send over `proto` on `branch`.
    pub fn via(&self, proto: Proto, branch: &str) -> String {
        let (name, addr) = (proto.via_name(), self.addr_text(proto));
        let mut v = String::with_capacity(16 + name.len() + addr.len() + branch.len());
        for part in ["SIP/2.0/", name, " ", addr, ";branch=", branch, ";rport"] {
            v.push_str(part);
        }
        v
    }

    /// Our Contact toward a party reached over `proto`, as `user`.
    pub fn contact(&self, user: &str, proto: Proto) -> String {
        let (scheme, tail) = match proto {
            Proto::Udp => ("<sip:", ">"),
            Proto::Tcp => ("<sip:", ";transport=tcp>"),
            Proto::Tls => ("<sips:", ">"),
        };
        let addr = self.addr_text(proto);
        let mut c = String::with_capacity(scheme.len() + user.len() + 1 + addr.len() + tail.len());
        for part in [scheme, user, "@", addr, tail] {
            c.push_str(part);
        }
        c
    }
}

/// A response to a request, built by parts.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    req: &'a Message,
    code: u16,
    reason: Option<&'a str>,
    to_tag: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<(&'a str, &'a [u8])>,
}

impl<'a> Response<'a> {
    /// A response to `req` with the standard reason phrase for `code`.
    pub fn to(req: &'a Message, code: u16) -> Response<'a> {
        Response {
            req,
            code,
            reason: None,
            to_tag: None,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn reason(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Our tag, added to the To header when the request's has none.
    pub fn tag(mut self, tag: &'a str) -> Self {
        self.to_tag = Some(tag);
        self
    }

    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Several headers of one name (challenges, contacts).
    pub fn headers(mut self, name: &'a str, values: &'a [String]) -> Self {
        for v in values {
            self.headers.push((name, v));
        }
        self
    }

    /// Headers given as (name, value) pairs.
    pub fn pairs(mut self, pairs: &'a [(&'a str, &'a str)]) -> Self {
        self.headers.extend_from_slice(pairs);
        self
    }

    pub fn opt_body(mut self, body: Option<(&'a str, &'a [u8])>) -> Self {
        self.body = body;
        self
    }

    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    pub fn sdp(self, body: &'a [u8]) -> Self {
        self.body("application/sdp", body)
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn request(&self) -> &'a Message {
        self.req
    }

    /// Whether a tag must still be chosen: a final or provisional answer (not 100) to a request
    /// outside a dialog, with none given.
    pub fn needs_tag(&self) -> bool {
        self.code > 100 && self.to_tag.is_none() && self.req.to_tag().is_none()
    }

    /// The bytes of the response to a request that came from `source` (its top Via gets
    /// `received` and `rport`).
    pub fn encode(&self, source: SocketAddr) -> Bytes {
        let req = self.req;
        let reason = self.reason.unwrap_or_else(|| reason_phrase(self.code));
        let mut w = Writer::response(self.code, reason);
        for (i, v) in req.values(Name::Via).enumerate() {
            if i == 0 {
                w.header("Via", &mark_via(v, source));
            } else {
                w.header("Via", v);
            }
        }
        w.copy(req, Name::From, "From");
        match (req.header(Name::To), self.to_tag) {
            (Some(to), Some(tag)) if req.to_tag().is_none() => {
                w.header_parts("To", &[to, ";tag=", tag]);
            }
            (Some(to), _) => {
                w.header("To", to);
            }
            _ => {}
        }
        w.header("Call-ID", req.call_id());
        w.copy(req, Name::CSeq, "CSeq");
        for (k, v) in &self.headers {
            w.header(k, v);
        }
        w.header("Server", "orbit");
        match self.body {
            Some((ct, b)) => w.finish(Some(ct), b),
            None => w.finish(None, b""),
        }
    }
}

/// Add `received` and fill `rport` on the top Via (RFC 3261 §18.2.1, RFC 3581).
fn mark_via(v: &str, src: SocketAddr) -> String {
    let mut out = String::with_capacity(v.len() + 40);
    let mut parts = v.split(';');
    out.push_str(parts.next().unwrap_or(""));
    let mut had_rport = false;
    for p in parts {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            had_rport = true;
            continue;
        }
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    use std::fmt::Write;
    let _ = write!(out, ";received={}", src.ip());
    if had_rport {
        let _ = write!(out, ";rport={}", src.port());
    }
    out
}

/// ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same branch, R-URI, From, Call-ID
/// and CSeq number as the INVITE; To from the response.
pub fn ack_for_failure(invite: &Bytes, resp: &Message) -> Option<Bytes> {
    let inv = crate::parse(invite.clone(), &Limits::default()).ok()?;
    let uri = inv.uri()?.to_string();
    let mut w = Writer::request("ACK", &uri);
    w.header("Via", inv.values(Name::Via).next()?);
    w.header("Max-Forwards", "70");
    w.copy(&inv, Name::From, "From");
    w.header("To", resp.header(Name::To)?);
    w.header("Call-ID", inv.call_id());
    w.header("CSeq", &format!("{} ACK", inv.cseq.seq));
    w.copy(&inv, Name::Route, "Route");
    Some(w.finish(None, b""))
}

/// CANCEL for an INVITE we sent (RFC 3261 §9.1): same R-URI, Via, From, To, Call-ID, Route.
pub fn cancel_for(invite: &Bytes, reason: Option<&str>) -> Option<Bytes> {
    let inv = crate::parse(invite.clone(), &Limits::default()).ok()?;
    if *inv.method() != Method::Invite {
        return None;
    }
    let mut w = Writer::request("CANCEL", inv.uri()?.as_str());
    w.header("Via", inv.values(Name::Via).next()?);
    w.header("Max-Forwards", "70");
    w.copy(&inv, Name::From, "From");
    w.copy(&inv, Name::To, "To");
    w.header("Call-ID", inv.call_id());
    w.header("CSeq", &format!("{} CANCEL", inv.cseq.seq));
    w.copy(&inv, Name::Route, "Route");
    if let Some(r) = reason {
        w.header("Reason", r);
    }
    Some(w.finish(None, b""))
}

/// A 400/505 for a request the strict parser refused, built from whatever header lines can be
/// read. Without a usable Via and a CSeq the sender could not match an answer: `None`.
pub fn salvage_response(bytes: &[u8], source: SocketAddr, code: u16, why: &str) -> Option<Bytes> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if method.is_empty() || method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    let mut via = vec![];
    let (mut from, mut to, mut cid, mut cseq) = (None, None, None, None);
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match Name::parse(n.trim()) {
            Name::Via => via.extend(split_list(v).map(str::to_string)),
            Name::From if from.is_none() => from = Some(v.to_string()),
            Name::To if to.is_none() => to = Some(v.to_string()),
            Name::CallId if cid.is_none() => cid = Some(v.to_string()),
            Name::CSeq if cseq.is_none() => cseq = Some(v.to_string()),
            _ => {}
        }
    }
    let top = via.first()?;
    // A 505 answers a Via of another version too; a 400 needs one we understand.
    if code != 505 {
        Via::parse(top)?;
    }
    let cseq = cseq?;
    let mut w = if code == 505 {
        Writer::response(505, "Version Not Supported")
    } else {
        Writer::response(code, &format!("Bad Request ({why})"))
    };
    w.header("Via", &mark_via(top, source));
    for v in via.iter().skip(1) {
        w.header("Via", v);
    }
    // Whatever of the dialog identifiers the request had is echoed (RFC 4475 3.3.1).
    for (name, value) in [("From", from), ("To", to), ("Call-ID", cid)] {
        if let Some(v) = value {
            w.header(name, &v);
        }
    }
    w.header("CSeq", &cseq);
    w.header("Server", "orbit");
    Some(w.finish(None, b""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message {
        crate::parse(
            Bytes::from(s.replace('\n', "\r\n").into_bytes()),
            &Limits::default(),
        )
        .unwrap()
    }

    fn parsed(b: Bytes) -> Message {
        crate::parse(b, &Limits::default()).unwrap()
    }

    #[test]
    fn a_response_echoes_the_request_marks_the_via_and_adds_our_tag() {
        let req = msg("INVITE sip:1@x SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa;rport\nVia: SIP/2.0/UDP p;branch=z9hG4bKb\nFrom: <sip:a@x>;tag=f\nTo: <sip:b@x>\nCall-ID: c1\nCSeq: 4 INVITE\nContent-Length: 0\n\n");
        let src: SocketAddr = "192.0.2.9:7000".parse().unwrap();
        let r = Response::to(&req, 486).tag("t1").header("Retry-After", "5");
        assert!(!r.clone().needs_tag());
        assert!(Response::to(&req, 486).needs_tag());
        assert!(!Response::to(&req, 100).needs_tag());
        let out = parsed(r.encode(src));
        assert_eq!(out.code(), 486);
        assert_eq!(out.reason(), "Busy Here");
        assert_eq!(
            out.values(Name::Via).next().unwrap(),
            "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa;received=192.0.2.9;rport=7000"
        );
        assert_eq!(out.values(Name::Via).count(), 2);
        assert_eq!(out.to_tag(), Some("t1"));
        assert_eq!(out.cseq.seq, 4);
        assert_eq!(out.header_other("Retry-After"), Some("5"));
    }

    #[test]
    fn cancel_and_ack_copy_the_invite() {
        let inv = Bytes::from_static(b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKz\r\nRoute: <sip:p;lr>\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 9 INVITE\r\nContent-Length: 0\r\n\r\n");
        let c = parsed(cancel_for(&inv, Some("SIP;cause=200")).unwrap());
        assert_eq!(*c.method(), Method::Cancel);
        assert_eq!(c.top_via().unwrap().branch(), Some("z9hG4bKz"));
        assert_eq!(c.cseq.seq, 9);
        assert_eq!(c.header(Name::Route), Some("<sip:p;lr>"));
        assert_eq!(c.header_other("Reason"), Some("SIP;cause=200"));
        let resp = msg("SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP h;branch=z9hG4bKz\nFrom: <sip:a@x>;tag=f\nTo: <sip:b@x>;tag=t\nCall-ID: c1\nCSeq: 9 INVITE\nContent-Length: 0\n\n");
        let a = parsed(ack_for_failure(&inv, &resp).unwrap());
        assert_eq!(a.to_tag(), Some("t"));
        assert_eq!(a.cseq.seq, 9);
        assert_eq!(*a.method(), Method::Ack);
    }
}
