//! The phones: small SIP user agents (callers, receptionists, colleagues), their dialogs and
//! the SIP they write. What they do of their own accord is in [`act`], what they do with what
//! they get in [`receive`], and what they saw, for the checks, in [`seen`].

mod act;
mod receive;
mod seen;

pub(crate) use seen::*;

use crate::*;

// ------------------------------------------------------------------ phones

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    Caller,
    Receptionist,
    Colleague,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum St {
    Calling,
    Early,
    Up,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A caller's call to its receptionist.
    Out,
    /// A receptionist's call from a caller.
    In,
    /// A recall to a receptionist.
    Recall,
    /// A colleague's retrieve (index into `Obs::retrieves`).
    Retrieve(usize),
    /// A colleague's pickup (index into `Obs::pickups`).
    Pickup(usize),
}

pub(crate) struct Dlg {
    pub(crate) kind: Kind,
    pub(crate) state: St,
    /// Our From/To value with our tag, and the other side's (with its tag once known).
    pub(crate) local: String,
    pub(crate) remote: String,
    /// Where in-dialog requests go (the other side's Contact).
    pub(crate) target: String,
    pub(crate) ruri: String,
    /// Our INVITE's branch and CSeq (CANCEL, ACK of a failure).
    pub(crate) branch: String,
    pub(crate) invite_cseq: u32,
    pub(crate) cseq: u32,
    /// As UAS: the INVITE not yet answered finally.
    pub(crate) invite: Option<Message>,
    /// The caller this call is about.
    pub(crate) label: String,
    pub(crate) cancelled: bool,
    /// A caller's call: the phone whose greeting it heard last.
    pub(crate) greeted: Option<String>,
    /// A retrieve's or recall's call: the caller answered our greeting with its name.
    pub(crate) reached: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Act {
    Register,
    Subscribe,
    Call,
    Answer(String),
    Reject(String),
    Refer(String),
    Bye(String),
    /// A caller or a holder hanging up of its own accord: only while the traffic lasts.
    HangUp(String),
    Cancel(String),
    Hello(String),
    Retrieve(u32),
    /// Pick up the call ringing this receptionist.
    Pickup(String),
    /// Subscribe to the other receptionists' lamps.
    WatchDesks,
}

/// What a phone's handlers act on besides the phone.
pub(crate) struct Cx<'a> {
    pub(crate) now: Instant,
    pub(crate) ms: Millis,
    pub(crate) rng: &'a mut StdRng,
    pub(crate) out: &'a mut Vec<(SocketAddr, SocketAddr, Bytes)>,
    pub(crate) obs: &'a mut Obs,
    /// New calls and retrieves are made only while this holds.
    pub(crate) traffic: bool,
}

pub(crate) struct Phone {
    pub(crate) ext: String,
    pub(crate) site: usize,
    pub(crate) addr: SocketAddr,
    pub(crate) edge: SocketAddr,
    pub(crate) role: Role,
    pub(crate) n: u64,
    pub(crate) dialogs: HashMap<String, Dlg>,
    pub(crate) timers: Vec<(Instant, Act)>,
    /// Final responses sent, by (Call-ID, CSeq, method): a retransmitted request gets it again.
    pub(crate) sent: HashMap<(String, u32, String), Bytes>,
    pub(crate) reg_cseq: u32,
    /// Lamp subscriptions: Call-ID → slot; the lamps: slot → (version, park shown).
    pub(crate) subs: HashMap<String, u32>,
    /// Extension lamp subscriptions: Call-ID → the receptionist watched.
    pub(crate) ext_subs: HashMap<String, String>,
    pub(crate) lamps: BTreeMap<u32, (u64, Option<ParkId>)>,
    pub(crate) seen: HashSet<ParkId>,
    pub(crate) busy: bool,
    pub(crate) calls_made: u64,
}

pub(crate) fn sdp(addr: SocketAddr) -> String {
    let ip = addr.ip();
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}

/// The URI inside a name-addr (`<sip:x@y>;tag=...` → `sip:x@y`).
pub(crate) fn uri_of(v: &str) -> String {
    orbit_sip::header::NameAddr::parse(v)
        .map(|n| n.uri.to_string())
        .unwrap_or_default()
}

/// The quoted display name of a name-addr.
pub(crate) fn display_of(v: &str) -> String {
    orbit_sip::header::NameAddr::parse(v)
        .and_then(|n| n.display)
        .map(|d| d.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// Whether colleagues go for park `p` at all: about two thirds of the parks are fought over,
/// the others left to be recalled.
pub(crate) fn wanted(p: ParkId) -> bool {
    (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) < 11
}

impl Phone {
    pub(crate) fn new(ext: String, site: usize, host: u8, role: Role) -> Phone {
        Phone {
            ext,
            site,
            addr: SocketAddr::from(([127, 0, site as u8 + 1, host], 5062)),
            edge: edge_addr(site),
            role,
            n: 0,
            dialogs: HashMap::new(),
            timers: vec![],
            sent: HashMap::new(),
            reg_cseq: 0,
            subs: HashMap::new(),
            ext_subs: HashMap::new(),
            lamps: BTreeMap::new(),
            seen: HashSet::new(),
            busy: false,
            calls_made: 0,
        }
    }

    /// Whether a call of ours is being set up: a call or retrieve not answered yet, or one
    /// answered (a retrieve, a recall) whose caller has not answered our greeting yet.
    pub(crate) fn mid_call_setup(&self) -> bool {
        self.dialogs.values().any(|d| match (&d.kind, d.state) {
            (Kind::Out | Kind::Retrieve(_) | Kind::Pickup(_), St::Calling | St::Early) => true,
            (Kind::Retrieve(_) | Kind::Pickup(_) | Kind::Recall, St::Up) => !d.reached,
            _ => false,
        })
    }

    pub(crate) fn id(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}x{}", self.ext, self.n)
    }

    pub(crate) fn at(&mut self, cx: &Cx, ms: u64, act: Act) {
        self.timers.push((cx.now + Duration::from_millis(ms), act));
    }

    pub(crate) fn send(&self, cx: &mut Cx, b: Bytes) {
        cx.out.push((self.addr, self.edge, b));
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request(
        &self,
        method: &str,
        ruri: &str,
        branch: &str,
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        extra: &str,
        body: Option<(&str, &str)>,
    ) -> Bytes {
        let (ct, b) = match body {
            Some((ct, b)) => (format!("Content-Type: {ct}\r\n"), b),
            None => (String::new(), ""),
        };
        Bytes::from(format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{}@{}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{b}",
            self.addr, self.ext, self.addr, b.len()
        ))
    }

    /// A request in dialog `cid` (none if it is over).
    pub(crate) fn in_dialog(
        &mut self,
        cx: &mut Cx,
        cid: &str,
        method: &str,
        extra: &str,
        body: Option<(&str, &str)>,
    ) {
        let branch = self.id("b");
        let Some(d) = self.dialogs.get_mut(cid) else {
            return;
        };
        d.cseq += 1;
        let (target, local, remote, cseq) =
            (d.target.clone(), d.local.clone(), d.remote.clone(), d.cseq);
        let b = self.request(
            method, &target, &branch, &local, &remote, cid, cseq, extra, body,
        );
        self.send(cx, b);
    }

    /// Answer `req`; a final answer is kept for its retransmissions.
    pub(crate) fn respond(
        &mut self,
        cx: &mut Cx,
        req: &Message,
        code: u16,
        tag: Option<&str>,
        body: Option<&str>,
    ) {
        let mut w = orbit_sip::Writer::response(code, orbit_sip::reason_phrase(code));
        for v in req.values(Name::Via) {
            w.header("Via", v);
        }
        w.header("From", req.header(Name::From).unwrap_or(""));
        let to = req.header(Name::To).unwrap_or("");
        match tag {
            Some(t) if req.to_tag().is_none() => w.header("To", &format!("{to};tag={t}")),
            _ => w.header("To", to),
        };
        w.header("Call-ID", req.call_id());
        w.header("CSeq", req.header(Name::CSeq).unwrap_or(""));
        w.header("Contact", &format!("<sip:{}@{}>", self.ext, self.addr));
        let b = match body {
            Some(s) => w.finish(Some("application/sdp"), s.as_bytes()),
            None => w.finish(None, b""),
        };
        if code >= 200 {
            let key = (
                req.call_id().to_string(),
                req.cseq.seq,
                req.method().as_str().to_string(),
            );
            self.sent.insert(key, b.clone());
        }
        self.send(cx, b);
    }

    pub(crate) fn register(&mut self, cx: &mut Cx, challenge: Option<&str>) {
        self.reg_cseq += 1;
        let auth = match challenge {
            Some(ch) => {
                let pw = format!("pw{}", self.ext);
                let creds = orbit_edge::auth::Credentials {
                    user: &self.ext,
                    password: &pw,
                    method: "REGISTER",
                    uri: &format!("sip:{DOMAIN}"),
                    nc: 1,
                    cnonce: "simcnonce",
                };
                let a = orbit_edge::auth::answer(ch, &creds).expect("a digest challenge");
                format!("Authorization: {a}\r\n")
            }
            None => String::new(),
        };
        let branch = self.id("b");
        let aor = format!("<sip:{}@{DOMAIN}>", self.ext);
        let b = self.request(
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            &branch,
            &format!("{aor};tag=reg{}", self.ext),
            &aor,
            &format!("reg-{}", self.ext),
            self.reg_cseq,
            &format!("{auth}Expires: 600\r\n"),
            None,
        );
        self.send(cx, b);
    }

    /// Send the INVITE of a new dialog we start; its Call-ID.
    pub(crate) fn invite(&mut self, cx: &mut Cx, d: Dlg) -> String {
        let cid = self.id("call");
        let body = sdp(self.addr);
        let b = self.request(
            "INVITE",
            &d.ruri,
            &d.branch,
            &d.local,
            &d.remote,
            &cid,
            d.invite_cseq,
            "",
            Some(("application/sdp", &body)),
        );
        self.dialogs.insert(cid.clone(), d);
        self.send(cx, b);
        cid
    }

    /// Dialog `cid` is over, whoever ended it.
    pub(crate) fn over(&mut self, cx: &mut Cx, cid: &str) {
        let Some(d) = self.dialogs.get_mut(cid) else {
            return;
        };
        if d.state == St::Done {
            return;
        }
        d.state = St::Done;
        match d.kind {
            Kind::Out => {
                self.busy = false;
                let ms = cx.rng.gen_range(1_000..=6_000);
                self.at(cx, ms, Act::Call);
            }
            Kind::Retrieve(_) | Kind::Pickup(_) => self.busy = false,
            Kind::In | Kind::Recall => {}
        }
    }
}

impl Dlg {
    /// A dialog we start with an INVITE to `ruri`, from `local` (with our tag), on `branch`.
    pub(crate) fn calling(
        kind: Kind,
        local: String,
        ruri: String,
        branch: String,
        label: String,
    ) -> Dlg {
        Dlg {
            kind,
            state: St::Calling,
            local,
            remote: format!("<{ruri}>"),
            target: ruri.clone(),
            ruri,
            branch,
            invite_cseq: 1,
            cseq: 1,
            invite: None,
            label,
            cancelled: false,
            greeted: None,
            reached: false,
        }
    }

    /// Our tag (UAS dialogs: in `local`).
    fn local_tag(&self) -> String {
        self.local.split(";tag=").nth(1).unwrap_or("").to_string()
    }
}
