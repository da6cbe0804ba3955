//! SIP messages: a strict parser (RFC 3261 §7 and §25, RFC 4475 torture cases) and a writer.
//!
//! A parsed [`Message`] keeps the datagram as [`Bytes`] and records header positions, so that
//! parsing allocates one `Vec` of spans and nothing per header. Folded header lines (obsolete
//! but legal) are unfolded into a second buffer only when a message has them.

use std::ops::Range;

use bytes::Bytes;

use crate::header::{CSeq, NameAddr, Via};
use crate::uri::Uri;
use crate::Method;

/// Why a message could not be accepted. The edge maps these to 400 / 505 or drops the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no end of headers")]
    Incomplete,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("malformed header line")]
    HeaderLine,
    #[error("header section is not UTF-8")]
    Encoding,
    #[error("malformed Request-URI")]
    RequestUri,
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    #[error("Content-Length larger than the body")]
    BodyTruncated,
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
    #[error("too many headers")]
    TooManyHeaders,
}

/// Header names the stack looks at, after compact forms (RFC 3261 §7.3.3) are expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Name {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    Expires,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Supported,
    Require,
    ProxyRequire,
    Allow,
    Event,
    ReferTo,
    ReferredBy,
    Replaces,
    UserAgent,
    Other,
}

impl Name {
    pub fn parse(name: &str) -> Name {
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'v' => Name::Via,
                b'f' => Name::From,
                b't' => Name::To,
                b'i' => Name::CallId,
                b'm' => Name::Contact,
                b'l' => Name::ContentLength,
                b'c' => Name::ContentType,
                b'k' => Name::Supported,
                b'o' => Name::Event,
                b'r' => Name::ReferTo,
                b'b' => Name::ReferredBy,
                _ => Name::Other,
            };
        }
        const KNOWN: &[(&str, Name)] = &[
            ("via", Name::Via),
            ("from", Name::From),
            ("to", Name::To),
            ("call-id", Name::CallId),
            ("cseq", Name::CSeq),
            ("contact", Name::Contact),
            ("max-forwards", Name::MaxForwards),
            ("content-length", Name::ContentLength),
            ("content-type", Name::ContentType),
            ("route", Name::Route),
            ("record-route", Name::RecordRoute),
            ("expires", Name::Expires),
            ("authorization", Name::Authorization),
            ("proxy-authorization", Name::ProxyAuthorization),
            ("www-authenticate", Name::WwwAuthenticate),
            ("proxy-authenticate", Name::ProxyAuthenticate),
            ("supported", Name::Supported),
            ("require", Name::Require),
            ("proxy-require", Name::ProxyRequire),
            ("allow", Name::Allow),
            ("event", Name::Event),
            ("refer-to", Name::ReferTo),
            ("referred-by", Name::ReferredBy),
            ("replaces", Name::Replaces),
            ("user-agent", Name::UserAgent),
        ];
        KNOWN
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, n)| *n)
            .unwrap_or(Name::Other)
    }

    /// Headers that may appear at most once (a second one makes the message invalid).
    fn single(self) -> Option<&'static str> {
        Some(match self {
            Name::From => "From",
            Name::To => "To",
            Name::CallId => "Call-ID",
            Name::CSeq => "CSeq",
            Name::MaxForwards => "Max-Forwards",
            Name::ContentLength => "Content-Length",
            Name::ContentType => "Content-Type",
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct HeaderSpan {
    name: Name,
    raw_name: Range<usize>,
    value: Range<usize>,
}

#[derive(Debug, Clone)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { code: u16, reason: Range<usize> },
}

/// Parse limits, from config. A message over a limit is rejected before any further work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_headers: 128 }
    }
}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    /// The header section (unfolded when needed): start line and header lines.
    head: Bytes,
    headers: Vec<HeaderSpan>,
    pub start: StartLine,
    pub body: Bytes,
    /// Frequently used headers, parsed once.
    pub call_id: Range<usize>,
    pub cseq: CSeq,
}

impl Message {
    fn str(&self, r: &Range<usize>) -> &str {
        let b = &self.head[r.clone()];
        debug_assert!(std::str::from_utf8(b).is_ok());
        // SAFETY: `parse` checked that `head` is UTF-8, and every span was cut from a `&str`
        // view of it (by `find`/`trim`/slicing, which only cut at char boundaries), so each
        // span is UTF-8 too. Re-validating on every header access cost 2% of the edge's CPU.
        unsafe { std::str::from_utf8_unchecked(b) }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> &Method {
        match &self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => &self.cseq.method,
        }
    }

    pub fn uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }

    pub fn code(&self) -> u16 {
        match self.start {
            StartLine::Response { code, .. } => code,
            _ => 0,
        }
    }

    pub fn reason(&self) -> &str {
        match &self.start {
            StartLine::Response { reason, .. } => self.str(reason),
            _ => "",
        }
    }

    pub fn call_id(&self) -> &str {
        self.str(&self.call_id)
    }

    /// First value of a header (whole line value, not split at commas).
    pub fn header(&self, name: Name) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.str(&h.value))
    }

    /// Value of a header not in [`Name`], matched case-insensitively.
    pub fn header_other(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == Name::Other && self.str(&h.raw_name).eq_ignore_ascii_case(name))
            .map(|h| self.str(&h.value))
    }

    /// Every line of a header, in order.
    pub fn headers(&self, name: Name) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| self.str(&h.value))
    }

    /// Every value of a list header (lines split at top-level commas), in order.
    pub fn values(&self, name: Name) -> impl Iterator<Item = &str> {
        self.headers(name).flat_map(split_list)
    }

    /// All headers as (name as written, value).
    pub fn all_headers(&self) -> impl Iterator<Item = (Name, &str, &str)> {
        self.headers
            .iter()
            .map(|h| (h.name, self.str(&h.raw_name), self.str(&h.value)))
    }

    pub fn top_via(&self) -> Option<Via<'_>> {
        self.values(Name::Via).next().and_then(Via::parse)
    }

    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header(Name::From).and_then(NameAddr::parse)
    }

    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header(Name::To).and_then(NameAddr::parse)
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.from().and_then(|f| f.param("tag"))
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.to().and_then(|t| t.param("tag"))
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.header(Name::MaxForwards)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v.min(255) as u32)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(Name::ContentType)
    }

    /// The whole header section as received (unfolded), for tracing.
    pub fn head_text(&self) -> &str {
        std::str::from_utf8(&self.head).unwrap_or("")
    }
}

/// Split a header value at commas that are outside quotes and angle brackets.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    let b = v.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut quoted = false;
    let mut angle = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < b.len() {
            match b[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    let item = v[start..i].trim();
                    i += 1;
                    start = i;
                    if item.is_empty() {
                        continue;
                    }
                    return Some(item);
                }
                _ => {}
            }
            i += 1;
        }
        done = true;
        let item = v[start.min(v.len())..].trim();
        (!item.is_empty()).then_some(item)
    })
}

pub(crate) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Where a stream framer finds the end of headers: returns the offset just past CRLFCRLF.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Content-Length of a header section, for stream framing. `Err` when absent or malformed:
/// on a stream Content-Length is mandatory (RFC 3261 §18.3).
pub fn stream_content_length(head: &[u8]) -> Result<usize, ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::Encoding)?;
    for line in text.split("\r\n").skip(1) {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if Name::parse(n.trim()) == Name::ContentLength {
            return v
                .trim()
                .parse::<usize>()
                .map_err(|_| ParseError::Header("Content-Length"));
        }
    }
    Err(ParseError::Header("Content-Length"))
}

/// Parse one message. `datagram` is true for UDP, where the body may be followed by padding and
/// Content-Length may be absent (the body is then the rest of the datagram).
pub fn parse(raw: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    // Leading CRLFs before a message are ignored (RFC 3261 §7.5); keep-alives are empty.
    let mut skip = 0;
    while raw[skip..].starts_with(b"\r\n") {
        skip += 2;
    }
    let head_end = find_head_end(&raw[skip..]).ok_or(ParseError::Incomplete)? + skip;
    let head_raw = raw.slice(skip..head_end - 2);
    if std::str::from_utf8(&head_raw).is_err() {
        return Err(ParseError::Encoding);
    }
    let folded = memchr::memmem::find(&head_raw, b"\r\n ").is_some()
        || memchr::memmem::find(&head_raw, b"\r\n\t").is_some();
    let head = if folded {
        Bytes::from(unfold(&head_raw))
    } else {
        head_raw
    };
    let text = std::str::from_utf8(&head).map_err(|_| ParseError::Encoding)?;

    let line_end = text.find("\r\n").unwrap_or(text.len());
    let start = parse_start_line(text, line_end)?;

    let mut headers = Vec::with_capacity(16);
    let mut pos = line_end + 2;
    let mut seen: u32 = 0;
    while pos < text.len() {
        let end = text[pos..]
            .find("\r\n")
            .map(|e| pos + e)
            .unwrap_or(text.len());
        let line = &text[pos..end];
        let colon = line.find(':').ok_or(ParseError::HeaderLine)?;
        let raw_name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(raw_name) {
            return Err(ParseError::HeaderLine);
        }
        let name = Name::parse(raw_name);
        if let Some(label) = name.single() {
            let bit = 1u32 << (name as u32);
            if seen & bit != 0 {
                return Err(ParseError::Duplicate(label));
            }
            seen |= bit;
        }
        let vstart = pos + colon + 1;
        let value = &text[vstart..end];
        // Trim once: trimming both ends separately breaks on an all-blank value (found by
        // the fuzzer: "l:  ").
        let lead = value.len() - value.trim_start().len();
        let vs = vstart + lead;
        headers.push(HeaderSpan {
            name,
            raw_name: pos..pos + raw_name.len(),
            value: vs..vs + value.trim().len(),
        });
        if headers.len() > limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        pos = end + 2;
    }

    let mut msg = Message {
        head,
        headers,
        start,
        body: Bytes::new(),
        call_id: 0..0,
        cseq: CSeq {
            seq: 0,
            method: Method::Options,
        },
    };

    // Body: Content-Length bounds it; a larger Content-Length than the bytes present is an error.
    let avail = raw.len() - head_end;
    let body_len = match msg.header(Name::ContentLength) {
        Some(v) => {
            let n: usize = v
                .parse()
                .map_err(|_| ParseError::Header("Content-Length"))?;
            if n > avail {
                return Err(ParseError::BodyTruncated);
            }
            n
        }
        None => avail,
    };
    msg.body = raw.slice(head_end..head_end + body_len);

    validate(&mut msg)?;
    Ok(msg)
}

fn unfold(head: &[u8]) -> Vec<u8> {
    // Replace each CRLF followed by whitespace (and that whitespace) with one space.
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        if head[i..].starts_with(b"\r\n") && matches!(head.get(i + 2), Some(b' ' | b'\t')) {
            while matches!(out.last(), Some(b' ' | b'\t')) {
                out.pop();
            }
            out.push(b' ');
            i += 2;
            while matches!(head.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    out
}

fn parse_start_line(text: &str, line_end: usize) -> Result<StartLine, ParseError> {
    let line = &text[..line_end];
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (ver, rest) = rest.split_once(' ').ok_or(ParseError::StartLine)?;
        if ver != "2.0" {
            return Err(ParseError::Version);
        }
        // Work on bytes: the reason phrase may start with a multi-byte character, and a str
        // split inside it panics (found by the fuzzer).
        let rb = rest.as_bytes();
        if rb.len() < 3 || !rb[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError::StartLine);
        }
        if rb.len() > 3 && rb[3] != b' ' {
            return Err(ParseError::StartLine);
        }
        let code = rb[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..700).contains(&code) {
            return Err(ParseError::StartLine);
        }
        let reason_start = (line.len() - rest.len() + 4).min(line.len());
        return Ok(StartLine::Response {
            code,
            reason: reason_start..line.len(),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP each (RFC 4475 3.1.2.7).
    let mut parts = line.split(' ');
    let (Some(m), Some(u), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if !is_token(m) {
        return Err(ParseError::StartLine);
    }
    let Some(ver) = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .map(|_| &v[4..])
    else {
        return Err(ParseError::StartLine);
    };
    if ver != "2.0" {
        return Err(ParseError::Version);
    }
    let uri = Uri::parse(u).map_err(|_| ParseError::RequestUri)?;
    // Headers (`?name=value`) are not allowed in a Request-URI (RFC 3261 §19.1.5).
    if uri.params().contains('?') {
        return Err(ParseError::RequestUri);
    }
    Ok(StartLine::Request {
        method: Method::from_token(m),
        uri,
    })
}

fn validate(msg: &mut Message) -> Result<(), ParseError> {
    let call_id = msg
        .headers
        .iter()
        .find(|h| h.name == Name::CallId)
        .map(|h| h.value.clone())
        .ok_or(ParseError::Header("Call-ID"))?;
    let cid = msg.str(&call_id);
    // Call-ID = word [ "@" word ]: no whitespace, not empty.
    if cid.is_empty() || cid.bytes().any(|c| c.is_ascii_whitespace() || c < 0x21) {
        return Err(ParseError::Header("Call-ID"));
    }
    msg.call_id = call_id;
    msg.cseq = msg
        .header(Name::CSeq)
        .and_then(CSeq::parse)
        .ok_or(ParseError::Header("CSeq"))?;
    if msg.from().is_none() {
        return Err(ParseError::Header("From"));
    }
    if msg.to().is_none() {
        return Err(ParseError::Header("To"));
    }
    let mut vias = 0;
    for v in msg.values(Name::Via) {
        if Via::parse(v).is_none() {
            return Err(ParseError::Header("Via"));
        }
        vias += 1;
    }
    if vias == 0 {
        return Err(ParseError::Header("Via"));
    }
    if let Some(mf) = msg.header(Name::MaxForwards) {
        // 1*DIGIT, leading zeros allowed ("0068"), at most 255.
        let ok = !mf.is_empty()
            && mf.len() <= 10
            && mf.bytes().all(|c| c.is_ascii_digit())
            && mf.parse::<u64>().map(|v| v <= 255).unwrap_or(false);
        if !ok {
            return Err(ParseError::Header("Max-Forwards"));
        }
    }
    if let Some(date) = msg.header_other("Date") {
        // rfc1123-date, always in GMT (RFC 3261 §20.17).
        if !date.ends_with(" GMT") {
            return Err(ParseError::Header("Date"));
        }
    }
    if let Some(e) = msg.header(Name::Expires) {
        if e.parse::<u32>().is_err() {
            return Err(ParseError::Header("Expires"));
        }
    }
    for c in msg.values(Name::Contact) {
        if c != "*" && NameAddr::parse(c).is_none() {
            return Err(ParseError::Header("Contact"));
        }
    }
    if let Some(ct) = msg.header(Name::ContentType) {
        let mime = ct.split(';').next().unwrap_or("").trim();
        match mime.split_once('/') {
            Some((t, s)) if is_token(t.trim()) && is_token(s.trim()) => {}
            _ => return Err(ParseError::Header("Content-Type")),
        }
    }
    if let StartLine::Request { method, .. } = &msg.start {
        if *method != msg.cseq.method {
            return Err(ParseError::CSeqMethod);
        }
    }
    Ok(())
}

/// Writes a SIP message. Content-Length is always written, computed from the body.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn request(method: &str, uri: &str) -> Writer {
        let mut buf = Vec::with_capacity(768);
        buf.extend_from_slice(method.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(uri.as_bytes());
        buf.extend_from_slice(b" SIP/2.0\r\n");
        Writer { buf }
    }

    pub fn response(code: u16, reason: &str) -> Writer {
        let mut buf = Vec::with_capacity(640);
        buf.extend_from_slice(b"SIP/2.0 ");
        let c = [
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        buf.extend_from_slice(&c);
        buf.push(b' ');
        buf.extend_from_slice(reason.as_bytes());
        buf.extend_from_slice(b"\r\n");
        Writer { buf }
    }

    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// A header whose value is written piecewise, avoiding a temporary String.
    pub fn header_parts(&mut self, name: &str, parts: &[&str]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        for p in parts {
            self.buf.extend_from_slice(p.as_bytes());
        }
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Copy every line of a header from a received message, in order.
    pub fn copy(&mut self, msg: &Message, name: Name, label: &str) -> &mut Self {
        for v in msg.headers(name) {
            self.header(label, v);
        }
        self
    }

    pub fn finish(mut self, content_type: Option<&str>, body: &[u8]) -> Bytes {
        if let Some(ct) = content_type.filter(|_| !body.is_empty()) {
            self.header("Content-Type", ct);
        }
        let mut n = itoa_buf(body.len());
        self.header("Content-Length", n.as_str());
        n.clear();
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(body);
        Bytes::from(self.buf)
    }
}

fn itoa_buf(n: usize) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Message, ParseError> {
        parse(Bytes::copy_from_slice(s.as_bytes()), &Limits::default())
    }

    const INVITE: &str = "INVITE sip:1002@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:1001@example.com>;tag=a1\r\n\
To: <sip:1002@example.com>\r\n\
Call-ID: abc@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:1001@127.0.0.1:5062>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\r\n";

    #[test]
    fn parses_invite() {
        let m = p(INVITE).unwrap();
        assert_eq!(*m.method(), Method::Invite);
        assert_eq!(m.call_id(), "abc@127.0.0.1");
        assert_eq!(m.cseq.seq, 1);
        assert_eq!(m.from_tag(), Some("a1"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(&m.body[..], b"v=0\r");
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-1"));
        assert_eq!(m.max_forwards(), Some(70));
    }

    #[test]
    fn unfolds_and_accepts_compact_forms() {
        let s = "OPTIONS sip:x@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\nf: <sip:a@h>\r\n ;tag=1\r\nt: sip:b@h\r\ni: c1\r\nCSeq:\t9\r\n\t OPTIONS\r\nl: 0\r\n\r\n";
        let m = p(s).unwrap();
        assert_eq!(m.from_tag(), Some("1"));
        assert_eq!(m.cseq.seq, 9);
        assert_eq!(m.cseq.method, Method::Options);
    }

    #[test]
    fn rejects_bad_messages() {
        let bad_version = INVITE.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia");
        assert_eq!(p(&bad_version).unwrap_err(), ParseError::Version);
        let long_cl = INVITE.replace("Content-Length: 4", "Content-Length: 9999");
        assert_eq!(p(&long_cl).unwrap_err(), ParseError::BodyTruncated);
        let dup = INVITE.replace("Call-ID: abc@127.0.0.1\r\n", "Call-ID: a\r\nCall-ID: b\r\n");
        assert_eq!(p(&dup).unwrap_err(), ParseError::Duplicate("Call-ID"));
        let mismatch = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
        assert_eq!(p(&mismatch).unwrap_err(), ParseError::CSeqMethod);
        let spaces = INVITE.replace(
            "INVITE sip:1002@example.com SIP",
            "INVITE  sip:1002@example.com SIP",
        );
        assert_eq!(p(&spaces).unwrap_err(), ParseError::StartLine);
        let no_colon = INVITE.replace("Max-Forwards: 70", "Max-Forwards 70");
        assert_eq!(p(&no_colon).unwrap_err(), ParseError::HeaderLine);
        let mf = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 300");
        assert_eq!(p(&mf).unwrap_err(), ParseError::Header("Max-Forwards"));
    }

    #[test]
    fn blank_header_values() {
        let m = p("OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nSubject:   \r\nX-Empty:\r\n\r\n").unwrap();
        assert_eq!(m.header_other("Subject"), Some(""));
        assert_eq!(m.header_other("X-Empty"), Some(""));
        // A blank Content-Length is malformed, not a panic.
        let bad = "OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl:  \r\n\r\n";
        assert!(p(bad).is_err());
    }

    #[test]
    fn writer_round_trips() {
        let mut w = Writer::response(486, "Busy Here");
        w.header("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
            .header("From", "<sip:a@h>;tag=1")
            .header("To", "<sip:b@h>;tag=2")
            .header("Call-ID", "x")
            .header("CSeq", "1 INVITE");
        let b = w.finish(None, b"");
        let m = parse(b, &Limits::default()).unwrap();
        assert_eq!(m.code(), 486);
        assert_eq!(m.reason(), "Busy Here");
        assert_eq!(m.to_tag(), Some("2"));
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        let v: Vec<_> = split_list("\"a, b\" <sip:x@h;p=1,2>, <sip:y@h> ,sip:z@h").collect();
        assert_eq!(v, vec!["\"a, b\" <sip:x@h;p=1,2>", "<sip:y@h>", "sip:z@h"]);
    }
}
