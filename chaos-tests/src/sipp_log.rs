//! What a phone saw, by its own clock: the messages of a SIPp `-trace_msg` file, each with
//! the time SIPp stamped on it as it sent or received it. The checker's only source about
//! calls: nothing here comes from Orbit's logs, metrics or API.

use thiserror::Error;

/// Microseconds since the Unix epoch, on the phone's clock.
pub type Micros = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

/// One message as the phone logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub at: Micros,
    pub dir: Dir,
    /// The request's method, or `None` for a response.
    pub method: Option<String>,
    /// The response's status code, or `None` for a request.
    pub code: Option<u16>,
    /// The Request-URI's user part (`701` of `sip:701@host`), for requests.
    pub target: Option<String>,
    pub call_id: String,
    /// The CSeq's method (which request a response answers).
    pub cseq_method: String,
    /// The From header's display name, unquoted.
    pub from_display: Option<String>,
    /// The P-Asserted-Identity header's display name, unquoted: whom a retriever was given.
    pub asserted_display: Option<String>,
    pub body: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LogError {
    #[error("line {line}: bad time stamp {stamp:?}")]
    Stamp { line: usize, stamp: String },
    #[error("line {line}: neither sent nor received: {text:?}")]
    Direction { line: usize, text: String },
}

const SEPARATOR: &str = "----------------------------------------------- ";

/// Every message of a `-trace_msg` file's text, in the order logged.
pub fn parse(text: &str) -> Result<Vec<Msg>, LogError> {
    let mut out = vec![];
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(stamp) = lines[i].strip_prefix(SEPARATOR) else {
            i += 1;
            continue;
        };
        let at = micros(stamp.trim()).ok_or_else(|| LogError::Stamp {
            line: i + 1,
            stamp: stamp.to_string(),
        })?;
        let what = lines.get(i + 1).copied().unwrap_or_default();
        let dir = if what.contains("message sent") {
            Dir::Sent
        } else if what.contains("message received") {
            Dir::Received
        } else {
            return Err(LogError::Direction {
                line: i + 2,
                text: what.to_string(),
            });
        };
        let start = i + 2;
        let mut end = start;
        while end < lines.len() && !lines[end].starts_with(SEPARATOR) {
            end += 1;
        }
        if let Some(m) = message(at, dir, &lines[start..end]) {
            out.push(m);
        }
        i = end;
    }
    Ok(out)
}

/// `2026-12-02 07:33:22.542738` (UTC, as SIPp prints local time on these machines).
fn micros(stamp: &str) -> Option<Micros> {
    let (date, time) = stamp.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    // Microseconds: SIPp prints six digits; pad or cut to six.
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    let us = frac.parse::<i64>().ok()?;
    let days = days_from_civil(y, mo, da);
    Some((((days * 24 + h) * 60 + mi) * 60 + s) * 1_000_000 + us)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn message(at: Micros, dir: Dir, lines: &[&str]) -> Option<Msg> {
    let mut it = lines
        .iter()
        .map(|l| l.trim_end())
        .skip_while(|l| l.is_empty());
    let first = it.next()?;
    let (method, code, target) = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        (None, rest.split(' ').next()?.parse().ok(), None)
    } else {
        let mut p = first.split(' ');
        let method = p.next()?.to_string();
        let uri = p.next().unwrap_or_default();
        let user = uri
            .split_once(':')
            .map(|(_, r)| r)
            .and_then(|r| r.split_once('@'))
            .map(|(u, _)| u.to_string());
        (Some(method), None, user)
    };
    let mut m = Msg {
        at,
        dir,
        method,
        code,
        target,
        call_id: String::new(),
        cseq_method: String::new(),
        from_display: None,
        asserted_display: None,
        body: String::new(),
    };
    let mut in_body = false;
    for l in it {
        if in_body {
            m.body.push_str(l);
            m.body.push('\n');
            continue;
        }
        if l.is_empty() {
            in_body = true;
            continue;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "call-id" | "i" => m.call_id = value.to_string(),
            "cseq" => m.cseq_method = value.split_whitespace().nth(1).unwrap_or("").to_string(),
            "from" | "f" => m.from_display = display(value),
            "p-asserted-identity" => m.asserted_display = display(value),
            _ => {}
        }
    }
    // The blank line SIPp leaves before the next entry is not the body's.
    m.body.truncate(m.body.trim_end().len());
    Some(m)
}

/// The quoted display name of a name-addr header value.
fn display(value: &str) -> Option<String> {
    value
        .strip_prefix('"')
        .and_then(|r| r.split_once('"'))
        .map(|(d, _)| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
----------------------------------------------- 2026-12-02 07:33:22.542738
UDP message received [506] bytes :

INVITE sip:1002@10.77.0.10:5060 SIP/2.0
Via: SIP/2.0/UDP 10.77.0.10:5060;branch=z9hG4bK1
From: \"Recall 701: Alice\" <sip:1001@orbit.local>;tag=abc
To: <sip:1002@orbit.local>
Call-ID: orbit-1@x
CSeq: 1 INVITE
Content-Length: 4

v=0

----------------------------------------------- 2026-12-02 07:33:22.544037
UDP message sent (464 bytes):

SIP/2.0 200 OK
Call-ID: orbit-1@x
CSeq: 1 INVITE
From: <sip:1001@orbit.local>;tag=abc
P-Asserted-Identity: \"701: 1104\" <sip:1104@orbit.local>

";

    #[test]
    fn messages_with_the_phones_time_and_what_the_checker_needs() {
        let m = parse(LOG).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dir, Dir::Received);
        assert_eq!(m[0].method.as_deref(), Some("INVITE"));
        assert_eq!(m[0].target.as_deref(), Some("1002"));
        assert_eq!(m[0].from_display.as_deref(), Some("Recall 701: Alice"));
        assert_eq!(m[0].call_id, "orbit-1@x");
        assert_eq!(m[0].body, "v=0");
        assert_eq!(m[1].dir, Dir::Sent);
        assert_eq!(m[1].code, Some(200));
        assert_eq!(m[1].cseq_method, "INVITE");
        assert_eq!(m[1].from_display, None);
        assert_eq!(m[1].asserted_display.as_deref(), Some("701: 1104"));
        assert_eq!(m[1].at - m[0].at, 1_299);
        // 2026-12-02 07:33:22.542738 UTC.
        assert_eq!(m[0].at, 1_796_196_802_542_738);
    }

    #[test]
    fn a_bad_stamp_or_direction_is_an_error_not_a_guess() {
        let bad = LOG.replace("07:33:22.542738", "07:33:xx.542738");
        assert!(matches!(parse(&bad), Err(LogError::Stamp { line: 1, .. })));
        let bad = LOG.replace("UDP message received [506] bytes :", "something else");
        assert!(matches!(
            parse(&bad),
            Err(LogError::Direction { line: 2, .. })
        ));
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn dates_count_days_as_the_calendar_does() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            days_from_civil(2024, 2, 29) + 1,
            days_from_civil(2024, 3, 1)
        );
    }
}
