//! Deterministic simulation of the whole call-park system: three edges (sites a, b, c, each
//! with its own phones, joined by the signed SIP trunk) on three real registry nodes (openraft
//! and redb on disk, see `orbit_registry::sim`), in one process on tokio's paused clock, every
//! choice drawn from one seeded generator (openraft's election jitter is the only unseeded part).
//!
//! Simulated: phones as small SIP user agents (text messages over an in-memory network with
//! small random latencies, in order per link): callers ring their site's receptionist, who
//! answers and parks them by blind REFER to 700; colleagues at every site watch the slots'
//! lamps (dialog-info SUBSCRIBE) and dial lit slots, several at once from different sites, now
//! and then cancelling at once; receptionists answer (or let ring, or refuse) recalls; whoever
//! gets a caller greets it with an INFO through the call, and the caller answers with its
//! name. Each edge's registry link is played here as `orbitd`'s is: every proposal on its own
//! task (retries while no leader, a reply lost or late is "unavailable"), a watch stream from
//! a home node built like the node's (`events` after a cursor, a resync from the state when
//! the cursor is older than `complete_after`) that moves to another node when its node is down
//! or cut off. Faults: registry nodes partitioned away or crashed (half of the crashes the
//! leader) and restarted from disk; edges cut from the registry (long enough, sometimes, for
//! their lease to lapse), from their home node, or from the other edges; and a sixth of the
//! trunk INVITEs that fetch a claimed call lost for good with everything else of that call
//! (the claimant's edge cut off from the holding edge right after winning the claim: the
//! holding edge must give the call its slot back), the retriever giving up after a while.
//!
//! Checked, on what the phones saw against the registry's committed history (from a node that
//! has all of it): no slot ever holds two calls and no park is claimed twice; every caller is
//! held by one phone at most (a 200 to a retrieve, or a recall answered and kept), that phone
//! won the claim in the registry, and the caller hears from that phone only; every recall
//! reaching a parker is for a park whose expiry was committed, never before its deadline, at
//! most once per park; after healing and a quiet period, every lamp a phone shows is the
//! registry's state of its slot. Liveness, then too: after the traffic nobody hangs up of
//! their own accord, and every caller still in a call must be connected to exactly one phone
//! (whose greeting it heard last and which heard its name back), or parked in a slot the
//! registry's final state has (its lamps lit), or being recalled from it; never on music in a
//! call the registry has in no slot (the quiet period lasts until no claimed call can still be
//! waiting for its fetch). A summary line per seed shows what happened, and the run fails if
//! too little did (parks, retrieves, fights, cross-site retrieves, recalls, faults).
//!
//! Two known edge bugs are counted in the summary rather than failed on: "stranded by a
//! failed repark" unless `SIM_STRICT_REPARK=1` (see [`strict_repark`]), and recalls "carried
//! into a new park" unless `SIM_STRICT_RECALL=1` (see [`strict_recall`]).
//!
//! Also in the mix: a fifth of the calls go to another site's receptionist (over the trunk,
//! parked there), a tenth of the parks ask for a slot by number (which may be taken), callers
//! hang up while parked, and a node other than node 1 takes a snapshot before it crashes (so
//! that, restarted, it resynchronises watchers further behind; node 1 keeps the whole history
//! for the checks).
//!
//! `SIM_SEEDS=4-20` runs other seeds (a single seed, `SIM_SEEDS=7`, replays one);
//! `SIM_DEBUG=1` prints what the phones get and do, and the faults; `SIM_TRACE=1` the edges'
//! logs (both on the simulated clock, milliseconds modulo 10⁶).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use orbit_edge::config::{
    AuthConfig, EdgeConfig, Extension, LimitsConfig, LotSettings, MediaConfig, RegistryLink,
    SipConfig, TenantConfig, TrunkConfig, TrunkPeer,
};
use orbit_edge::orbit::{OrbitError, OrbitFeed, Outcome, Proposal};
use orbit_edge::{Edge, Start};
use orbit_registry::batch::{Batcher, WriteError};
use orbit_registry::sim::{now_ms, SimNet, SimNode};
use orbit_registry::StateMachineStore;
use orbit_sip::message::{Limits, Message, Name};
use orbit_sip::transport::{Flow, Proto};
use orbit_sip::Method;
use orbit_state::{Command, Event, Millis, Orbit, ParkId, Phase};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

const SITES: usize = 3;
const SITE_NAMES: [&str; SITES] = ["site-a", "site-b", "site-c"];
const NODES: u64 = 3;
const DOMAIN: &str = "orbit.test";
const SECRET: &str = "simulated-trunk-secret-of-the-sites";
const SLOTS: std::ops::RangeInclusive<u32> = 701..=710;
/// Short parks and rings, so that a run sees many recalls.
const PARKING_SECS: u64 = 6;
const RING_SECS: u64 = 3;
/// Short enough that some registry cuts outlast it.
const LEASE: Duration = Duration::from_secs(5);
const CALLERS: usize = 4;
const COLLEAGUES: usize = 3;
/// Phones make new calls and retrieves for this long; then everything heals and settles.
const TRAFFIC: Duration = Duration::from_secs(60);
/// As `orbit_registry::Link`: one attempt, and all attempts of one proposal.
const ATTEMPT: Duration = Duration::from_secs(2);
const PROPOSE_BUDGET: Duration = Duration::from_secs(5);
/// How often the watch streams look for new entries (a node notifies; here they poll).
const POLL: Duration = Duration::from_millis(5);
/// As `orbit_edge`'s trunk: how long a call claimed by another site waits for that site's
/// trunk INVITE before it goes back to its slot.
const FETCH_WAIT: Duration = Duration::from_secs(10);
/// A retriever that hears nothing for this long gives up (the registry's proposals take
/// `PROPOSE_BUDGET` at most).
const GIVE_UP: Duration = Duration::from_secs(6);
/// The longest the system is given to settle after the traffic (it normally takes less).
const SETTLE_MAX: Duration = Duration::from_secs(60);

fn edge_addr(site: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, site as u8 + 1, 1], 5060))
}

fn receptionist(site: usize) -> String {
    format!("{}100", site + 1)
}

fn all_extensions() -> Vec<String> {
    let mut v = vec![];
    for s in 0..SITES {
        v.push(receptionist(s));
        v.extend((1..=CALLERS).map(|n| format!("{}20{n}", s + 1)));
        v.extend((1..=COLLEAGUES).map(|n| format!("{}30{n}", s + 1)));
    }
    v
}

fn config(site: usize) -> EdgeConfig {
    let extensions = all_extensions()
        .into_iter()
        .map(|e| {
            let x = Extension {
                password: Some(format!("pw{e}")),
                ..Default::default()
            };
            (e, x)
        })
        .collect();
    let peers = (0..SITES)
        .filter(|s| *s != site)
        .map(|s| TrunkPeer {
            site: SITE_NAMES[s].into(),
            addr: edge_addr(s),
        })
        .collect();
    let cfg = EdgeConfig {
        site: SITE_NAMES[site].into(),
        sip: SipConfig {
            listen: edge_addr(site),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            advertise: None,
            t1_ms: 500,
        },
        media: MediaConfig {
            ip: edge_addr(site).ip(),
            port_min: 40000,
            port_max: 40999,
            timeout_secs: 60,
            idle_close_secs: 10,
            parked_timeout_secs: None,
        },
        tenant: TenantConfig {
            domain: DOMAIN.into(),
            realm: None,
            any_host: false,
            extensions,
            lots: vec![LotSettings {
                slots: format!("{}-{}", SLOTS.start(), SLOTS.end()),
                parking_secs: PARKING_SECS,
                recall_ring_secs: RING_SECS,
                ..Default::default()
            }],
            features: Default::default(),
        },
        // The site's phones (127.0.<site>.x) are trusted for INVITE and SUBSCRIBE; they
        // register with digest all the same.
        auth: AuthConfig {
            trusted: vec![format!("127.0.{}.0/24", site + 1)],
            ..Default::default()
        },
        limits: LimitsConfig::default(),
        registry: Some(RegistryLink {
            nodes: (1..=NODES).map(|n| format!("sim-{n}")).collect(),
            lease_secs: LEASE.as_secs(),
        }),
        trunk: Some(TrunkConfig {
            secret: SECRET.into(),
            peers,
            max_skew_secs: 30,
        }),
    };
    cfg.validate().expect("valid edge config");
    cfg
}

/// The one place an edge is built (its media argument is about to change).
fn new_edge(site: usize, seed: u64) -> Edge {
    let now = Instant::now().into_std();
    let mut local = HashMap::new();
    local.insert(Proto::Udp, edge_addr(site));
    Edge::new(
        Arc::new(config(site)),
        local,
        Start::seeded(now, now_ms(), seed * 10 + site as u64),
    )
    .with_registry(now, LEASE)
}

// ------------------------------------------------------------------ the registry links

/// What an edge's link needs of a node: handles that outlive nothing (a crash drops them).
#[derive(Clone)]
struct NodeLink {
    raft: orbit_registry::Raft,
    /// A queue of our own into the node's Raft, as its gRPC service has.
    batch: Batcher,
    state: StateMachineStore,
}

impl NodeLink {
    fn leads(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(id) && m.state.is_leader()
    }
}

/// Shared between the main loop and the proposal tasks.
#[derive(Default)]
struct Links {
    nodes: BTreeMap<u64, NodeLink>,
    /// Per edge, the nodes it cannot reach.
    cut: [BTreeSet<u64>; SITES],
    /// The node partitioned from its peers (it cannot forward to the leader).
    isolated: Option<u64>,
}

impl Links {
    /// The leader, if edge `site` can get a proposal to it: directly, or through a node that
    /// forwards it.
    fn leader_for(&self, site: usize) -> Option<NodeLink> {
        let (&id, leader) = self.nodes.iter().find(|(id, n)| n.leads(**id))?;
        let direct = !self.cut[site].contains(&id);
        let forwarded = Some(id) != self.isolated
            && self
                .nodes
                .keys()
                .any(|n| !self.cut[site].contains(n) && Some(*n) != self.isolated);
        (direct || forwarded).then(|| leader.clone())
    }
}

type Shared = Arc<Mutex<Links>>;

/// One proposal, as `orbitd`'s link makes it (`orbit_registry::Link::propose`): retried
/// while no leader can be reached, "unavailable" when its reply is lost or late.
async fn propose(
    links: Shared,
    site: usize,
    p: Proposal,
    latency: Duration,
    tx: mpsc::UnboundedSender<(usize, u64, Outcome)>,
) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let unavailable = |s: &str| Err(OrbitError::Unavailable(s.into()));
    let outcome = loop {
        let leader = links.lock().unwrap().leader_for(site);
        if let Some(n) = leader {
            tokio::time::sleep(latency).await;
            if links.lock().unwrap().leader_for(site).is_none() {
                // Cut on the way: the request is lost, the client times out.
                tokio::time::sleep(ATTEMPT).await;
                break unavailable("timed out");
            }
            let r = tokio::time::timeout(ATTEMPT, n.batch.write(p.cmd.clone())).await;
            tokio::time::sleep(latency).await;
            let lost = links.lock().unwrap().cut[site].len() == NODES as usize;
            match r {
                _ if lost => break unavailable("reply lost"),
                Ok(Ok((_, o))) => break o.map_err(OrbitError::Rejected),
                // Nothing appended: try again.
                Ok(Err(WriteError::NotLeader(_))) => {}
                Ok(Err(e)) => break unavailable(&e.to_string()),
                Err(_) => break unavailable("timed out"),
            }
        }
        if started.elapsed() + pause > PROPOSE_BUDGET {
            break unavailable("no leader");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    let _ = tx.send((site, p.token, outcome));
}

/// What a node's watch stream sends a watcher at `cursor` next, and the new cursor: as
/// `orbit_registry::node::next_items`, a resync when the events after the cursor are not all
/// kept, else those entries.
fn next_items(sm: &StateMachineStore, cursor: u64) -> (Vec<OrbitFeed>, u64) {
    let d = sm.data.read().unwrap();
    let events = sm.events.lock().unwrap();
    let applied = d.last_applied.map(|l| l.index).unwrap_or(0);
    let floor = sm.complete_after.load(std::sync::atomic::Ordering::Relaxed);
    if cursor < floor {
        let orbit = Box::new(d.orbit.clone());
        return (
            vec![OrbitFeed::Resync {
                index: applied,
                orbit,
            }],
            applied,
        );
    }
    let from = events.partition_point(|a| a.index <= cursor);
    let out = events
        .range(from..)
        .map(|a| OrbitFeed::Applied {
            index: a.index,
            at: a.at,
            cmds: a.done.iter().map(|(c, _)| c.clone()).collect(),
        })
        .collect();
    (out, applied.max(cursor))
}

/// An edge's watch stream.
struct Watch {
    /// The node watched now (none while reconnecting).
    node: Option<u64>,
    /// The next node to try.
    next: u64,
    /// The node's cursor, and the last index delivered (where a new stream resumes).
    cursor: u64,
    after: u64,
    retry_at: Instant,
    pause: Duration,
}

// ------------------------------------------------------------------ the network

struct Wire {
    /// (delivery time, sequence) → (from, to, bytes).
    queue: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    seq: u64,
    /// Each link delivers in order.
    last: HashMap<(SocketAddr, SocketAddr), Instant>,
}

impl Wire {
    fn send(&mut self, now: Instant, ms: u64, from: SocketAddr, to: SocketAddr, b: Bytes) {
        let at = (now + Duration::from_millis(ms))
            .max(self.last.get(&(from, to)).copied().unwrap_or(now));
        self.last.insert((from, to), at);
        self.seq += 1;
        self.queue.insert((at, self.seq), (from, to, b));
    }
}

// ------------------------------------------------------------------ what the phones saw

struct RetrieveSeen {
    ext: String,
    site: usize,
    slot: u32,
    sent: Millis,
    /// Final response and when.
    done: Option<(u16, Millis)>,
    /// The caller named by the 200's P-Asserted-Identity (`"<slot>: <label>" <uri>`), with
    /// the slot and the URI's user it names.
    label: Option<String>,
    named: Option<(u32, String)>,
    /// The caller that answered our greeting.
    reached: Option<String>,
    cancelled: bool,
    /// The caller that heard our greeting.
    heard_by: Option<String>,
}

struct RecallSeen {
    ext: String,
    call_id: String,
    slot: u32,
    label: String,
    at: Millis,
}

#[derive(Default)]
struct Obs {
    calls: u64,
    refers: u64,
    parked: u64,
    park_failed: u64,
    retrieves: Vec<RetrieveSeen>,
    recalls: Vec<RecallSeen>,
    /// (caller label, phone that held it, since): a retrieve's 200, or a recall kept.
    holders: Vec<(String, String, Millis)>,
    /// (caller label, phone whose greeting it heard).
    heard: Vec<(String, String)>,
}

// ------------------------------------------------------------------ phones

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Caller,
    Receptionist,
    Colleague,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Calling,
    Early,
    Up,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A caller's call to its receptionist.
    Out,
    /// A receptionist's call from a caller.
    In,
    /// A recall to a receptionist.
    Recall,
    /// A colleague's retrieve (index into `Obs::retrieves`).
    Retrieve(usize),
}

struct Dlg {
    kind: Kind,
    state: St,
    /// Our From/To value with our tag, and the other side's (with its tag once known).
    local: String,
    remote: String,
    /// Where in-dialog requests go (the other side's Contact).
    target: String,
    ruri: String,
    /// Our INVITE's branch and CSeq (CANCEL, ACK of a failure).
    branch: String,
    invite_cseq: u32,
    cseq: u32,
    /// As UAS: the INVITE not yet answered finally.
    invite: Option<Message>,
    /// The caller this call is about.
    label: String,
    cancelled: bool,
    /// A caller's call: the phone whose greeting it heard last.
    greeted: Option<String>,
    /// A retrieve's or recall's call: the caller answered our greeting with its name.
    reached: bool,
}

#[derive(Clone, Debug)]
enum Act {
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
}

/// What a phone's handlers act on besides the phone.
struct Cx<'a> {
    now: Instant,
    ms: Millis,
    rng: &'a mut StdRng,
    out: &'a mut Vec<(SocketAddr, SocketAddr, Bytes)>,
    obs: &'a mut Obs,
    /// New calls and retrieves are made only while this holds.
    traffic: bool,
}

struct Phone {
    ext: String,
    site: usize,
    addr: SocketAddr,
    edge: SocketAddr,
    role: Role,
    n: u64,
    dialogs: HashMap<String, Dlg>,
    timers: Vec<(Instant, Act)>,
    /// Final responses sent, by (Call-ID, CSeq, method): a retransmitted request gets it again.
    sent: HashMap<(String, u32, String), Bytes>,
    reg_cseq: u32,
    /// Lamp subscriptions: Call-ID → slot; the lamps: slot → (version, park shown).
    subs: HashMap<String, u32>,
    lamps: BTreeMap<u32, (u64, Option<ParkId>)>,
    seen: HashSet<ParkId>,
    busy: bool,
    calls_made: u64,
}

fn sdp(addr: SocketAddr) -> String {
    let ip = addr.ip();
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}

/// The URI inside a name-addr (`<sip:x@y>;tag=...` → `sip:x@y`).
fn uri_of(v: &str) -> String {
    orbit_sip::header::NameAddr::parse(v)
        .map(|n| n.uri.to_string())
        .unwrap_or_default()
}

/// The quoted display name of a name-addr.
fn display_of(v: &str) -> String {
    orbit_sip::header::NameAddr::parse(v)
        .and_then(|n| n.display)
        .map(|d| d.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// Whether colleagues go for park `p` at all: about two thirds of the parks are fought over,
/// the others left to be recalled.
fn wanted(p: ParkId) -> bool {
    (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) < 11
}

impl Phone {
    fn new(ext: String, site: usize, host: u8, role: Role) -> Phone {
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
            lamps: BTreeMap::new(),
            seen: HashSet::new(),
            busy: false,
            calls_made: 0,
        }
    }

    /// Whether a call of ours is being set up: a call or retrieve not answered yet, or one
    /// answered (a retrieve, a recall) whose caller has not answered our greeting yet.
    fn mid_call_setup(&self) -> bool {
        self.dialogs.values().any(|d| match (&d.kind, d.state) {
            (Kind::Out | Kind::Retrieve(_), St::Calling | St::Early) => true,
            (Kind::Retrieve(_) | Kind::Recall, St::Up) => !d.reached,
            _ => false,
        })
    }

    fn id(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}x{}", self.ext, self.n)
    }

    fn at(&mut self, cx: &Cx, ms: u64, act: Act) {
        self.timers.push((cx.now + Duration::from_millis(ms), act));
    }

    fn send(&self, cx: &mut Cx, b: Bytes) {
        cx.out.push((self.addr, self.edge, b));
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
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
    fn in_dialog(
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
    fn respond(
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

    // ------------------------------------------------------------ timers

    fn on_timer(&mut self, cx: &mut Cx, act: Act) {
        match act {
            Act::Register => self.register(cx, None),
            Act::Subscribe => {
                for slot in SLOTS {
                    let cid = self.id("lamp");
                    let tag = self.id("t");
                    let from = format!("<sip:{}@{DOMAIN}>;tag={tag}", self.ext);
                    let to = format!("<sip:{slot}@{DOMAIN}>");
                    let branch = self.id("b");
                    let b = self.request(
                        "SUBSCRIBE",
                        &format!("sip:{slot}@{DOMAIN}"),
                        &branch,
                        &from,
                        &to,
                        &cid,
                        1,
                        "Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 3600\r\n",
                        None,
                    );
                    self.subs.insert(cid, slot);
                    self.send(cx, b);
                }
            }
            Act::Call => {
                if !cx.traffic || self.busy {
                    return;
                }
                self.busy = true;
                self.calls_made += 1;
                cx.obs.calls += 1;
                let label = format!("c{}n{}", self.ext, self.calls_made);
                // Mostly their own site's receptionist, now and then another site's (the call
                // then comes over the trunk, and is parked at the receptionist's site).
                let site = if cx.rng.gen_ratio(1, 5) {
                    (self.site + cx.rng.gen_range(1..SITES)) % SITES
                } else {
                    self.site
                };
                let to_ext = receptionist(site);
                let ruri = format!("sip:{to_ext}@{DOMAIN}");
                let tag = self.id("t");
                let d = Dlg {
                    kind: Kind::Out,
                    state: St::Calling,
                    local: format!("\"{label}\" <sip:{}@{DOMAIN}>;tag={tag}", self.ext),
                    remote: format!("<{ruri}>"),
                    target: ruri.clone(),
                    ruri,
                    branch: self.id("b"),
                    invite_cseq: 1,
                    cseq: 1,
                    invite: None,
                    label,
                    cancelled: false,
                    greeted: None,
                    reached: false,
                };
                self.invite(cx, d);
            }
            Act::Retrieve(slot) => {
                let lit = self.lamps.get(&slot).is_some_and(|l| l.1.is_some());
                if !cx.traffic || self.busy || !lit {
                    return;
                }
                self.busy = true;
                cx.obs.retrieves.push(RetrieveSeen {
                    ext: self.ext.clone(),
                    site: self.site,
                    slot,
                    sent: cx.ms,
                    done: None,
                    label: None,
                    named: None,
                    reached: None,
                    cancelled: false,
                    heard_by: None,
                });
                let ruri = format!("sip:{slot}@{DOMAIN}");
                let tag = self.id("t");
                let d = Dlg {
                    kind: Kind::Retrieve(cx.obs.retrieves.len() - 1),
                    state: St::Calling,
                    local: format!("<sip:{}@{DOMAIN}>;tag={tag}", self.ext),
                    remote: format!("<{ruri}>"),
                    target: ruri.clone(),
                    ruri,
                    branch: self.id("b"),
                    invite_cseq: 1,
                    cseq: 1,
                    invite: None,
                    label: String::new(),
                    cancelled: false,
                    greeted: None,
                    reached: false,
                };
                let cid = self.invite(cx, d);
                // Now and then the retriever thinks better of it while its claim is ordered;
                // and it gives up when nothing answers for a while.
                if cx.rng.gen_ratio(1, 10) {
                    let ms = cx.rng.gen_range(2..=40);
                    self.at(cx, ms, Act::Cancel(cid.clone()));
                }
                self.at(cx, GIVE_UP.as_millis() as u64, Act::Cancel(cid));
            }
            Act::Answer(cid) => {
                let body = sdp(self.addr);
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                let Some(inv) = d.invite.take() else { return };
                if d.state != St::Early {
                    return;
                }
                d.state = St::Up;
                let tag = d.local_tag();
                self.respond(cx, &inv, 200, Some(&tag), Some(&body));
            }
            Act::Reject(cid) => {
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                let Some(inv) = d.invite.take() else { return };
                d.state = St::Done;
                let tag = d.local_tag();
                self.respond(cx, &inv, 486, Some(&tag), None);
            }
            Act::Refer(cid) => {
                if self.dialogs.get(&cid).is_none_or(|d| d.state != St::Up) {
                    return;
                }
                cx.obs.refers += 1;
                // Mostly the park extension; now and then a slot of the receptionist's choice
                // (which may be taken).
                let target = if cx.rng.gen_ratio(1, 10) {
                    cx.rng.gen_range(SLOTS).to_string()
                } else {
                    "700".to_string()
                };
                let extra = format!(
                    "Refer-To: <sip:{target}@{DOMAIN}>\r\nReferred-By: <sip:{}@{DOMAIN}>\r\n",
                    self.ext
                );
                self.in_dialog(cx, &cid, "REFER", &extra, None);
            }
            Act::HangUp(cid) => {
                // After the traffic nobody hangs up of their own accord: whoever is still in
                // a call stays there, for the liveness check to see where each call ended.
                if cx.traffic {
                    self.on_timer(cx, Act::Bye(cid));
                }
            }
            Act::Bye(cid) => {
                if self.dialogs.get(&cid).is_none_or(|d| d.state != St::Up) {
                    return;
                }
                self.in_dialog(cx, &cid, "BYE", "", None);
                self.over(cx, &cid);
            }
            Act::Cancel(cid) => {
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                if !matches!(d.state, St::Calling | St::Early) {
                    return;
                }
                d.cancelled = true;
                let (ruri, branch, local, cseq) = (
                    d.ruri.clone(),
                    d.branch.clone(),
                    d.local.clone(),
                    d.invite_cseq,
                );
                let to = format!("<{ruri}>");
                if let Kind::Retrieve(i) = d.kind {
                    cx.obs.retrieves[i].cancelled = true;
                }
                let b = self.request("CANCEL", &ruri, &branch, &local, &to, &cid, cseq, "", None);
                self.send(cx, b);
            }
            Act::Hello(cid) => {
                let Some(d) = self.dialogs.get(&cid) else {
                    return;
                };
                if d.state != St::Up {
                    return;
                }
                if d.kind == Kind::Recall {
                    // The recall was answered and kept: this phone holds the caller.
                    cx.obs
                        .holders
                        .push((d.label.clone(), self.ext.clone(), cx.ms));
                }
                // Names this phone and the retrieve, so that the caller's side can tell which
                // retrieve reached it.
                let what = match d.kind {
                    Kind::Retrieve(i) => format!("r{i}"),
                    _ => "recall".into(),
                };
                let hello = format!("hello {} {what}", self.ext);
                self.in_dialog(cx, &cid, "INFO", "", Some(("text/plain", &hello)));
                let ms = cx.rng.gen_range(1_000..=4_000);
                self.at(cx, ms, Act::HangUp(cid));
            }
        }
    }

    fn register(&mut self, cx: &mut Cx, challenge: Option<&str>) {
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
    fn invite(&mut self, cx: &mut Cx, d: Dlg) -> String {
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
    fn over(&mut self, cx: &mut Cx, cid: &str) {
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
            Kind::Retrieve(_) => self.busy = false,
            Kind::In | Kind::Recall => {}
        }
    }

    // ------------------------------------------------------------ messages

    fn on_message(&mut self, cx: &mut Cx, m: Message) {
        debug(|| {
            format!(
                "{} got {}",
                self.ext,
                m.head_text().lines().next().unwrap_or("")
            )
        });
        if m.is_request() {
            self.on_request(cx, m)
        } else {
            self.on_response(cx, m)
        }
    }

    fn on_request(&mut self, cx: &mut Cx, m: Message) {
        let cid = m.call_id().to_string();
        let key = (cid.clone(), m.cseq.seq, m.method().as_str().to_string());
        if let Some(b) = self.sent.get(&key) {
            let b = b.clone();
            return self.send(cx, b);
        }
        match m.method() {
            Method::Invite if m.to_tag().is_none() => self.on_invite(cx, m),
            Method::Invite => {
                if self.dialogs.get(&cid).is_some_and(|d| d.state == St::Up) {
                    let body = sdp(self.addr);
                    self.respond(cx, &m, 200, None, Some(&body));
                } else {
                    self.respond(cx, &m, 481, None, None);
                }
            }
            Method::Ack => {
                let Some(d) = self.dialogs.get(&cid) else {
                    return;
                };
                if d.state != St::Up
                    || self
                        .sent
                        .contains_key(&(cid.clone(), m.cseq.seq, "ACK".into()))
                {
                    return;
                }
                // The first ACK of our 200: note it so that a repeat does nothing.
                self.sent
                    .insert((cid.clone(), m.cseq.seq, "ACK".into()), Bytes::new());
                match d.kind {
                    Kind::In => {
                        let ms = cx.rng.gen_range(300..=1_500);
                        self.at(cx, ms, Act::Refer(cid));
                    }
                    Kind::Recall => self.at(cx, 50, Act::Hello(cid)),
                    _ => {}
                }
            }
            Method::Bye => {
                let known = self.dialogs.get(&cid).is_some_and(|d| d.state == St::Up);
                self.respond(cx, &m, if known { 200 } else { 481 }, None, None);
                self.over(cx, &cid);
            }
            Method::Cancel => {
                self.respond(cx, &m, 200, None, None);
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                if let Some(inv) = d.invite.take() {
                    let tag = d.local_tag();
                    self.respond(cx, &inv, 487, Some(&tag), None);
                    self.over(cx, &cid);
                }
            }
            Method::Notify => {
                self.respond(cx, &m, 200, None, None);
                let body = String::from_utf8_lossy(&m.body).to_string();
                let event = m.header(Name::Event).unwrap_or("");
                if event.starts_with("dialog") {
                    self.on_lamp(cx, &cid, &body);
                } else if event.starts_with("refer") {
                    if body.starts_with("SIP/2.0 200") {
                        cx.obs.parked += 1;
                    } else if body.starts_with("SIP/2.0 ") && !body.starts_with("SIP/2.0 1") {
                        // The park failed: the call stays with us; give it up.
                        cx.obs.park_failed += 1;
                        debug(|| format!("{} park failed: {body:?}", self.ext));
                        self.at(cx, 300, Act::Bye(cid));
                    }
                }
            }
            Method::Info => {
                self.respond(cx, &m, 200, None, None);
                let body = String::from_utf8_lossy(&m.body).to_string();
                let Some(d) = self.dialogs.get_mut(&cid) else {
                    return;
                };
                if let Some(who) = body.strip_prefix("hello ") {
                    let (who, what) = who.split_once(' ').unwrap_or((who, ""));
                    d.greeted = Some(who.to_string());
                    cx.obs.heard.push((d.label.clone(), who.to_string()));
                    if let Some(i) = what.strip_prefix('r').and_then(|i| i.parse::<usize>().ok()) {
                        cx.obs.retrieves[i].heard_by = Some(d.label.clone());
                    }
                    let me = format!("caller {}", d.label);
                    self.in_dialog(cx, &cid, "INFO", "", Some(("text/plain", &me)));
                } else if let Some(label) = body.strip_prefix("caller ") {
                    d.reached = d.label == label;
                    if let Kind::Retrieve(i) = d.kind {
                        cx.obs.retrieves[i].reached = Some(label.to_string());
                    } else if d.label != label {
                        panic!("{} reached {label} on a recall of {}", self.ext, d.label);
                    }
                }
            }
            _ => self.respond(cx, &m, 200, None, None),
        }
    }

    fn on_invite(&mut self, cx: &mut Cx, m: Message) {
        let cid = m.call_id().to_string();
        let from = m.header(Name::From).unwrap_or("").to_string();
        let tag = self.id("t");
        if self.role != Role::Receptionist || self.dialogs.contains_key(&cid) {
            return self.respond(cx, &m, 486, Some(&tag), None);
        }
        let display = display_of(&from);
        let (kind, label) = match display.strip_prefix("Recall ") {
            Some(rest) => {
                let (slot, label) = rest.split_once(": ").expect("\"Recall <slot>: <label>\"");
                cx.obs.recalls.push(RecallSeen {
                    ext: self.ext.clone(),
                    call_id: cid.clone(),
                    slot: slot.parse().expect("a slot"),
                    label: label.to_string(),
                    at: cx.ms,
                });
                (Kind::Recall, label.to_string())
            }
            None => (Kind::In, display),
        };
        let to = m.header(Name::To).unwrap_or("");
        let d = Dlg {
            kind: kind.clone(),
            state: St::Early,
            local: format!("{to};tag={tag}"),
            remote: from,
            target: m.header(Name::Contact).map(uri_of).unwrap_or_default(),
            ruri: String::new(),
            branch: String::new(),
            invite_cseq: m.cseq.seq,
            cseq: 0,
            invite: Some(m.clone()),
            label,
            cancelled: false,
            greeted: None,
            reached: false,
        };
        self.dialogs.insert(cid.clone(), d);
        self.respond(cx, &m, 180, Some(&tag), None);
        if kind == Kind::In {
            let ms = cx.rng.gen_range(200..=800);
            return self.at(cx, ms, Act::Answer(cid));
        }
        // A recall: answered (sometimes after the ring time), left ringing, or refused.
        match cx.rng.gen_range(0..20) {
            0..=12 => {
                let ms = cx.rng.gen_range(300..=3_500);
                self.at(cx, ms, Act::Answer(cid));
            }
            13..=16 => {}
            _ => self.at(cx, 200, Act::Reject(cid)),
        }
    }

    fn on_lamp(&mut self, cx: &mut Cx, cid: &str, body: &str) {
        let Some(&slot) = self.subs.get(cid) else {
            return;
        };
        let Some(version) = body
            .split("dialog-info\" version=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let park = body
            .split("id=\"park-")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<ParkId>().ok());
        // Older documents (out of order) are ignored, as RFC 4235 says.
        if self.lamps.get(&slot).is_some_and(|l| l.0 >= version) {
            return;
        }
        debug(|| format!("{} lamp {slot} v{version} {park:?}", self.ext));
        self.lamps.insert(slot, (version, park));
        let Some(p) = park else { return };
        if !self.seen.insert(p) || !cx.traffic || !wanted(p) || !cx.rng.gen_ratio(2, 5) {
            return;
        }
        // Mostly at once (everyone who saw the lamp light up: fights), or a bit later, or
        // late (a race with the recall).
        let ms = match cx.rng.gen_range(0..20) {
            0..=9 => cx.rng.gen_range(100..=250),
            10..=16 => cx.rng.gen_range(250..=2_000),
            _ => cx.rng.gen_range(5_500..=8_000),
        };
        self.at(cx, ms, Act::Retrieve(slot));
    }

    fn on_response(&mut self, cx: &mut Cx, m: Message) {
        let cid = m.call_id().to_string();
        let code = m.code();
        match m.cseq.method {
            Method::Register => {
                if code == 401 {
                    let ch = m.header(Name::WwwAuthenticate).unwrap_or("").to_string();
                    self.register(cx, Some(&ch));
                } else {
                    assert_eq!(code, 200, "{} could not register", self.ext);
                }
            }
            Method::Invite => self.on_invite_response(cx, &cid, m),
            Method::Refer if code >= 300 => {
                debug(|| format!("{} REFER refused: {code}", self.ext));
                cx.obs.park_failed += 1;
                self.at(cx, 300, Act::Bye(cid));
            }
            Method::Subscribe => assert!(code < 300, "lamp subscription refused: {code}"),
            _ => {}
        }
    }

    fn on_invite_response(&mut self, cx: &mut Cx, cid: &str, m: Message) {
        let code = m.code();
        let Some(d) = self.dialogs.get_mut(cid) else {
            return;
        };
        let to = m.header(Name::To).unwrap_or("").to_string();
        if code < 200 {
            if code > 100 && d.state == St::Calling {
                d.state = St::Early;
                d.remote = to;
            }
            return;
        }
        if code >= 300 {
            // ACK the failure (same branch), then the dialog is over.
            let (ruri, branch, local, cseq) = (
                d.ruri.clone(),
                d.branch.clone(),
                d.local.clone(),
                d.invite_cseq,
            );
            if let Kind::Retrieve(i) = d.kind {
                cx.obs.retrieves[i].done.get_or_insert((code, cx.ms));
            }
            let b = self.request("ACK", &ruri, &branch, &local, &to, cid, cseq, "", None);
            self.send(cx, b);
            return self.over(cx, cid);
        }
        let first = matches!(d.state, St::Calling | St::Early);
        if first {
            d.state = St::Up;
            d.remote = to.clone();
            d.target = m.header(Name::Contact).map(uri_of).unwrap_or_default();
        }
        // Every 2xx (and its retransmissions) is ACKed.
        let (target, local, cseq) = (d.target.clone(), d.local.clone(), d.invite_cseq);
        let branch = self.id("b");
        let b = self.request("ACK", &target, &branch, &local, &to, cid, cseq, "", None);
        self.send(cx, b);
        if !first {
            return;
        }
        let d = self.dialogs.get_mut(cid).expect("present");
        match d.kind.clone() {
            Kind::Out => {
                // Mostly long enough to be parked and retrieved or recalled; now and then the
                // caller gives up while parked.
                let ms = if cx.rng.gen_ratio(1, 4) {
                    cx.rng.gen_range(2_000..=8_000)
                } else {
                    cx.rng.gen_range(12_000..=30_000)
                };
                self.at(cx, ms, Act::HangUp(cid.to_string()));
            }
            Kind::Retrieve(i) => {
                // `"701: <label>" <sip:...>`, from the edge holding the call (this phone's, or
                // another site's passed on by this phone's edge).
                let pai = m.header_other("P-Asserted-Identity").unwrap_or("");
                let display = display_of(pai);
                let named = display.split_once(": ").and_then(|(slot, label)| {
                    let user = orbit_sip::Uri::parse(&uri_of(pai))
                        .ok()?
                        .user()?
                        .to_string();
                    Some((slot.parse::<u32>().ok()?, label.to_string(), user))
                });
                debug(|| format!("{} got {pai:?}", self.ext));
                d.label = named.as_ref().map(|n| n.1.clone()).unwrap_or_default();
                let cancelled = d.cancelled;
                let r = &mut cx.obs.retrieves[i];
                r.done.get_or_insert((code, cx.ms));
                if let Some((slot, label, user)) = named {
                    r.label = Some(label.clone());
                    r.named = Some((slot, user));
                    cx.obs.holders.push((label, self.ext.clone(), cx.ms));
                }
                if cancelled {
                    // Answered before our CANCEL arrived: hang up at once.
                    self.at(cx, 0, Act::Bye(cid.to_string()));
                } else {
                    self.at(cx, 50, Act::Hello(cid.to_string()));
                }
            }
            _ => {}
        }
    }
}

impl Dlg {
    /// Our tag (UAS dialogs: in `local`).
    fn local_tag(&self) -> String {
        self.local.split(";tag=").nth(1).unwrap_or("").to_string()
    }
}

// ------------------------------------------------------------------ the simulation

struct Sim {
    rng: StdRng,
    dir: PathBuf,
    net: SimNet,
    nodes: BTreeMap<u64, Option<SimNode>>,
    links: Shared,
    edges: Vec<Edge>,
    watches: Vec<Watch>,
    /// Per edge, registry feed items with their delivery time, in order.
    feeds: Vec<std::collections::VecDeque<(Instant, OrbitFeed)>>,
    outcomes: mpsc::UnboundedReceiver<(usize, u64, Outcome)>,
    outcome_tx: mpsc::UnboundedSender<(usize, u64, Outcome)>,
    wire: Wire,
    phones: Vec<Phone>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Edges cut from the other edges.
    trunk_cut: [bool; SITES],
    /// Trunk claims seen (by Call-ID), and those lost for good: the claimant's edge is cut
    /// from the holding edge for that call right after winning its claim.
    trunk_claims: HashSet<String>,
    lost_claims: HashSet<String>,
    /// Park proposals under way: (edge, token) → the parked call's Call-ID; and the calls
    /// whose last park proposal failed: Call-ID → (edge, when, why).
    parks_proposed: HashMap<(usize, u64), String>,
    parks_failed: HashMap<String, (usize, Millis, String)>,
    obs: Obs,
    traffic: bool,
    // Faults: (heal at, crashed node) for the nodes; (heal at, edge) for the edges.
    node_fault: Option<(Instant, Option<u64>)>,
    next_node_fault: Instant,
    edge_fault: Option<(Instant, usize)>,
    next_edge_fault: Instant,
    faults: u64,
    leader_kills: u64,
    edge_cuts: [u64; 3],
    resyncs: u64,
}

impl Sim {
    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .flatten()
            .find(|n| n.leads())
            .map(|n| n.id)
    }

    async fn start_node(&mut self, id: u64) {
        // The crashed node's file may still be held for a moment by its last tasks.
        for _ in 0..100 {
            match SimNode::start(id, &self.dir.join(format!("n{id}")), &self.net).await {
                Ok(n) => {
                    let link = NodeLink {
                        raft: n.raft.clone(),
                        batch: Batcher::start(n.raft.clone()),
                        state: n.state.clone(),
                    };
                    self.links.lock().unwrap().nodes.insert(id, link);
                    self.nodes.insert(id, Some(n));
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("node {id} does not restart from its disk");
    }

    async fn crash(&mut self, id: u64) {
        // Nodes other than 1 take a snapshot first: restarted from it, their events start
        // there (`complete_after`), and a watcher further behind is resynchronised. Node 1
        // keeps the whole history for the checks.
        if id != 1 {
            if let Some(n) = &self.nodes[&id] {
                let _ = n.raft.trigger().snapshot().await;
                // Let the snapshot be built and written.
                tokio::time::sleep(ms(20)).await;
            }
        }
        self.links.lock().unwrap().nodes.remove(&id);
        if let Some(n) = self.nodes.insert(id, None).flatten() {
            n.crash().await;
        }
    }

    /// One fault at a time among the nodes, one at a time among the edges.
    async fn faults(&mut self, now: Instant) {
        match self.node_fault {
            Some((until, crashed)) if now >= until => {
                self.net.heal();
                self.links.lock().unwrap().isolated = None;
                if let Some(id) = crashed {
                    self.start_node(id).await;
                }
                self.node_fault = None;
                self.next_node_fault = now + ms(self.rng.gen_range(1_000..=4_000));
            }
            None if now >= self.next_node_fault => {
                self.faults += 1;
                let id = self.rng.gen_range(1..=NODES);
                let until = now + ms(self.rng.gen_range(300..=3_000));
                if self.rng.gen_bool(0.5) {
                    debug(|| format!("fault: node {id} isolated"));
                    self.net.isolate(id);
                    self.links.lock().unwrap().isolated = Some(id);
                    self.node_fault = Some((until, None));
                } else {
                    // Half the crashes take the leader, and the first one always (openraft's
                    // unseeded election jitter must not leave a run without one).
                    let id = match self.leader() {
                        Some(l) if self.leader_kills == 0 || self.rng.gen_bool(0.5) => {
                            self.leader_kills += 1;
                            l
                        }
                        _ => id,
                    };
                    debug(|| format!("fault: node {id} crashed"));
                    self.crash(id).await;
                    self.node_fault = Some((until, Some(id)));
                }
            }
            _ => {}
        }
        match self.edge_fault {
            Some((until, site)) if now >= until => {
                self.links.lock().unwrap().cut[site].clear();
                self.trunk_cut[site] = false;
                self.edge_fault = None;
                self.next_edge_fault = now + ms(self.rng.gen_range(1_000..=4_000));
            }
            None if now >= self.next_edge_fault => {
                self.faults += 1;
                let site = self.rng.gen_range(0..SITES);
                let kind = self.rng.gen_range(0..3);
                self.edge_cuts[kind] += 1;
                let until = match kind {
                    // Cut from the registry: sometimes longer than the lease.
                    0 => {
                        self.links.lock().unwrap().cut[site] = (1..=NODES).collect();
                        self.rng.gen_range(300..=7_000)
                    }
                    // Cut from its home node (the one it watches first).
                    1 => {
                        self.links.lock().unwrap().cut[site].insert(site as u64 + 1);
                        self.rng.gen_range(300..=4_000)
                    }
                    _ => {
                        self.trunk_cut[site] = true;
                        self.rng.gen_range(300..=4_000)
                    }
                };
                self.edge_fault = Some((now + ms(until), site));
                debug(|| format!("fault: {} cut ({kind}) for {until} ms", SITE_NAMES[site]));
            }
            _ => {}
        }
    }

    async fn heal(&mut self) {
        self.net.heal();
        {
            let mut l = self.links.lock().unwrap();
            l.isolated = None;
            for c in l.cut.iter_mut() {
                c.clear();
            }
        }
        self.trunk_cut = [false; SITES];
        self.node_fault = None;
        self.edge_fault = None;
        for id in 1..=NODES {
            if self.nodes[&id].is_none() {
                self.start_node(id).await;
            }
        }
    }

    /// Move what the watch streams have for the edges into their feeds.
    fn poll_watches(&mut self, now: Instant) {
        let links = self.links.lock().unwrap();
        for site in 0..SITES {
            let w = &mut self.watches[site];
            let reachable =
                |id: u64| links.nodes.contains_key(&id) && !links.cut[site].contains(&id);
            if let Some(id) = w.node {
                if !reachable(id) {
                    // The stream broke: reconnect, to the next node, after a pause.
                    w.node = None;
                    w.next = id % NODES + 1;
                    w.retry_at = now + w.pause;
                    w.pause = (w.pause * 2).min(Duration::from_secs(1));
                }
            }
            if w.node.is_none() && now >= w.retry_at {
                if reachable(w.next) {
                    debug(|| format!("edge {site} watches node {} from {}", w.next, w.after));
                    w.node = Some(w.next);
                    w.cursor = w.after;
                    w.pause = Duration::from_millis(50);
                } else {
                    w.next = w.next % NODES + 1;
                    w.retry_at = now + w.pause;
                    w.pause = (w.pause * 2).min(Duration::from_secs(1));
                }
            }
            let Some(id) = w.node else { continue };
            let (items, cursor) = next_items(&links.nodes[&id].state, w.cursor);
            w.cursor = cursor;
            for it in items {
                w.after = match &it {
                    OrbitFeed::Applied { index, .. } => *index,
                    OrbitFeed::Resync { index, .. } => {
                        self.resyncs += 1;
                        *index
                    }
                    OrbitFeed::Outcome { .. } => unreachable!(),
                };
                let q = &mut self.feeds[site];
                let at =
                    (now + ms(self.rng.gen_range(1..=4))).max(q.back().map_or(now, |(t, _)| *t));
                q.push_back((at, it));
            }
        }
    }

    /// A proposal's outcome, to the edge that made it (a park's outcome noted on the way).
    fn outcome(&mut self, site: usize, token: u64, outcome: Outcome, now: Instant) {
        if let Some(call) = self.parks_proposed.remove(&(site, token)) {
            match &outcome {
                Ok(_) => self.parks_failed.remove(&call),
                Err(e) => self
                    .parks_failed
                    .insert(call, (site, now_ms(), e.to_string())),
            };
        }
        let feed = OrbitFeed::Outcome { token, outcome };
        self.edges[site].on_orbit_feed(now.into_std(), feed);
        self.pump(site, now);
    }

    /// Hand out what edge `site` produced: proposals to their tasks, messages to the wire.
    fn pump(&mut self, site: usize, now: Instant) {
        for p in self.edges[site].take_proposals() {
            if let Command::Park { call, .. } = &p.cmd {
                self.parks_proposed
                    .insert((site, p.token), call.call_id.clone());
            }
            let latency = ms(self.rng.gen_range(1..=4));
            tokio::spawn(propose(
                self.links.clone(),
                site,
                p,
                latency,
                self.outcome_tx.clone(),
            ));
        }
        // Media is not simulated: the phones' audio is their INFO greeting.
        self.edges[site].take_media();
        let out: Vec<_> = self.edges[site].drain().collect();
        for t in out {
            let to = t.flow.addr;
            let peer = (0..SITES).find(|s| edge_addr(*s) == to);
            let lat = match peer {
                Some(p) if self.trunk_cut[site] || self.trunk_cut[p] => continue,
                Some(_) if self.lost_on_trunk(&t.bytes) => continue,
                Some(_) => self.rng.gen_range(2..=15),
                None => self.rng.gen_range(1..=5),
            };
            self.wire.send(now, lat, edge_addr(site), to, t.bytes);
        }
    }

    /// Whether a message an edge sends over the trunk is lost: all of a call's messages are
    /// when it fetches a claimed call and the dice say so (a sixth of them, while the traffic
    /// lasts). The call is then never fetched: its holding edge must give it its slot back.
    fn lost_on_trunk(&mut self, b: &Bytes) -> bool {
        let Ok(m) = orbit_sip::parse(b.clone(), &Limits::default()) else {
            return false;
        };
        let cid = m.call_id();
        if self.lost_claims.contains(cid) {
            return true;
        }
        let claim = m.is_request()
            && matches!(m.method(), Method::Invite)
            && m.to_tag().is_none()
            && m.header_other("X-Orbit-Claim").is_some();
        if !claim || !self.trunk_claims.insert(cid.to_string()) {
            return false;
        }
        if !self.traffic || !self.rng.gen_ratio(1, 6) {
            return false;
        }
        debug(|| format!("trunk claim {cid} lost"));
        self.lost_claims.insert(cid.to_string());
        true
    }

    fn phone_out(&mut self, now: Instant, out: Vec<(SocketAddr, SocketAddr, Bytes)>) {
        for (from, to, b) in out {
            let lat = self.rng.gen_range(1..=5);
            self.wire.send(now, lat, from, to, b);
        }
    }

    /// Run everything due now, then wait for the next thing to do.
    async fn step(&mut self) {
        let now = Instant::now();
        let std_now = now.into_std();
        let wall = now_ms();
        self.poll_watches(now);
        for site in 0..SITES {
            while self.feeds[site].front().is_some_and(|(t, _)| *t <= now) {
                let (_, f) = self.feeds[site].pop_front().unwrap();
                self.edges[site].on_orbit_feed(std_now, f);
            }
            self.pump(site, now);
        }
        while let Ok((site, token, outcome)) = self.outcomes.try_recv() {
            self.outcome(site, token, outcome, now);
        }
        while let Some(e) = self.wire.queue.first_entry() {
            if e.key().0 > now {
                break;
            }
            let (from, to, b) = e.remove();
            if let Some(site) = (0..SITES).find(|s| edge_addr(*s) == to) {
                let from_site = (0..SITES).find(|s| edge_addr(*s) == from);
                if from_site.is_some_and(|f| self.trunk_cut[f] || self.trunk_cut[site]) {
                    continue;
                }
                let flow = Flow {
                    proto: Proto::Udp,
                    addr: from,
                    conn: 0,
                };
                self.edges[site].on_message(std_now, flow, b);
                self.pump(site, now);
            } else if let Some(&i) = self.by_addr.get(&to) {
                let m = orbit_sip::parse(b, &Limits::default()).expect("edges send valid SIP");
                let mut out = vec![];
                let mut cx = Cx {
                    now,
                    ms: wall,
                    rng: &mut self.rng,
                    out: &mut out,
                    obs: &mut self.obs,
                    traffic: self.traffic,
                };
                self.phones[i].on_message(&mut cx, m);
                self.phone_out(now, out);
            }
        }
        for site in 0..SITES {
            if self.edges[site]
                .next_timeout()
                .is_some_and(|t| t <= std_now)
            {
                self.edges[site].on_timeout(std_now);
                self.pump(site, now);
            }
        }
        for i in 0..self.phones.len() {
            loop {
                let p = &mut self.phones[i];
                let Some(k) = (0..p.timers.len()).find(|k| p.timers[*k].0 <= now) else {
                    break;
                };
                let (_, act) = p.timers.remove(k);
                let mut out = vec![];
                let mut cx = Cx {
                    now,
                    ms: wall,
                    rng: &mut self.rng,
                    out: &mut out,
                    obs: &mut self.obs,
                    traffic: self.traffic,
                };
                p.on_timer(&mut cx, act);
                self.phone_out(now, out);
            }
        }
        // Sleep until the next thing due, an outcome, or the next look at the watches.
        let mut next = now + POLL;
        if let Some(((t, _), _)) = self.wire.queue.first_key_value() {
            next = next.min(*t);
        }
        for site in 0..SITES {
            if let Some((t, _)) = self.feeds[site].front() {
                next = next.min(*t);
            }
            if let Some(t) = self.edges[site].next_timeout() {
                next = next.min(Instant::from_std(t));
            }
        }
        for p in &self.phones {
            for (t, _) in &p.timers {
                next = next.min(*t);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next.max(now)) => {}
            Some((site, token, outcome)) = self.outcomes.recv() => {
                self.outcome(site, token, outcome, Instant::now());
            }
        }
    }

    /// The node whose events hold the whole history.
    fn reference(&self) -> &SimNode {
        self.nodes
            .values()
            .flatten()
            .find(|n| {
                n.state
                    .complete_after
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 0
            })
            .expect("a node with the whole history")
    }
}

/// `SIM_DEBUG=1`: what the phones do, on stderr.
fn debug(f: impl FnOnce() -> String) {
    if std::env::var_os("SIM_DEBUG").is_some() {
        eprintln!("{} {}", now_ms() % 1_000_000, f());
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The committed history: (index, stamped time, event).
fn history(node: &SimNode) -> Vec<(u64, Millis, Event)> {
    node.state
        .events
        .lock()
        .unwrap()
        .iter()
        .flat_map(|a| a.done.iter().map(|(_, e)| (a.index, a.at, e.clone())))
        .collect()
}

/// Whether an event changes what a slot holds.
fn moves_slots(ev: &Event) -> bool {
    !ev.slots().is_empty() && !matches!(ev, Event::Expired(_) | Event::RecallStage(_))
}

/// When the claims were committed whose caller is still in its call, which no phone of the
/// claimant got and which was not parked again or ended since: the holding edge waits
/// `FETCH_WAIT` for the claimant's trunk INVITE from when its watch shows the claim, then
/// parks the call again.
fn unfetched_claims<'a>(
    hist: &'a [(u64, Millis, Event)],
    sim: &'a Sim,
) -> impl Iterator<Item = Millis> + 'a {
    hist.iter().filter_map(move |(i, at, e)| {
        let Event::Claimed { parked, by } = e else {
            return None;
        };
        let label = parked.call.caller_display.as_deref().unwrap_or("");
        let up = sim.phones.iter().any(|p| {
            p.dialogs
                .values()
                .any(|d| d.kind == Kind::Out && d.label == label && d.state != St::Done)
        });
        let got = sim
            .obs
            .holders
            .iter()
            .any(|(l, ext, _)| l == label && ext == by);
        let moved_on = hist.iter().any(|(j, _, e)| {
            j > i
                && match e {
                    Event::Parked(p) | Event::Ended { parked: p, .. } => {
                        p.call.call_id == parked.call.call_id
                    }
                    _ => false,
                }
        });
        (up && !got && !moved_on).then_some(*at)
    })
}

struct Summary {
    line: String,
}

async fn run(seed: u64) -> Summary {
    let dir = std::env::temp_dir().join(format!("orbit-edge-sim-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (outcome_tx, outcomes) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(seed),
        dir: dir.clone(),
        net: SimNet::new(seed),
        nodes: BTreeMap::new(),
        links: Arc::new(Mutex::new(Links::default())),
        edges: vec![],
        watches: vec![],
        feeds: vec![Default::default(); SITES],
        outcomes,
        outcome_tx,
        wire: Wire {
            queue: BTreeMap::new(),
            seq: 0,
            last: HashMap::new(),
        },
        phones: vec![],
        by_addr: HashMap::new(),
        trunk_cut: [false; SITES],
        trunk_claims: HashSet::new(),
        lost_claims: HashSet::new(),
        parks_proposed: HashMap::new(),
        parks_failed: HashMap::new(),
        obs: Obs::default(),
        traffic: true,
        node_fault: None,
        next_node_fault: now + ms(2_000),
        edge_fault: None,
        next_edge_fault: now + ms(3_000),
        faults: 0,
        leader_kills: 0,
        edge_cuts: [0; 3],
        resyncs: 0,
    };
    for id in 1..=NODES {
        sim.start_node(id).await;
    }
    let members = (1..=NODES)
        .map(|id| (id, openraft::BasicNode::new(format!("sim-{id}"))))
        .collect::<BTreeMap<_, _>>();
    sim.nodes[&1]
        .as_ref()
        .unwrap()
        .raft
        .initialize(members)
        .await
        .unwrap();
    while sim.leader().is_none() {
        tokio::time::sleep(ms(10)).await;
    }
    let now = Instant::now();
    for site in 0..SITES {
        sim.edges.push(new_edge(site, seed));
        sim.watches.push(Watch {
            node: None,
            next: site as u64 + 1,
            cursor: 0,
            after: 0,
            retry_at: now,
            pause: ms(50),
        });
        let mut phones = vec![Phone::new(receptionist(site), site, 10, Role::Receptionist)];
        for n in 1..=CALLERS {
            phones.push(Phone::new(
                format!("{}20{n}", site + 1),
                site,
                20 + n as u8,
                Role::Caller,
            ));
        }
        for n in 1..=COLLEAGUES {
            phones.push(Phone::new(
                format!("{}30{n}", site + 1),
                site,
                30 + n as u8,
                Role::Colleague,
            ));
        }
        for mut p in phones {
            let stagger = sim.rng.gen_range(0..=300);
            p.timers.push((now + ms(stagger), Act::Register));
            match p.role {
                Role::Colleague => p.timers.push((now + ms(stagger + 50), Act::Subscribe)),
                Role::Caller => {
                    let first = sim.rng.gen_range(1_000..=4_000);
                    p.timers.push((now + ms(first), Act::Call));
                }
                Role::Receptionist => {}
            }
            sim.by_addr.insert(p.addr, sim.phones.len());
            sim.phones.push(p);
        }
        sim.pump(site, now);
    }

    let end = now + TRAFFIC;
    while Instant::now() < end {
        let now = Instant::now();
        sim.faults(now).await;
        sim.step().await;
    }
    // Heal, stop new calls, retrieves and hang-ups, and let what is under way settle: until
    // no slot has changed for a while, and a call claimed by another site has had the time to
    // be fetched or to go back to its slot (the parks left in their slots stay there to be
    // compared; the callers left in calls stay there for the liveness check).
    sim.heal().await;
    sim.traffic = false;
    let settle = Instant::now();
    let mut look = settle + ms(4_000);
    loop {
        sim.step().await;
        let now = Instant::now();
        if now < look {
            continue;
        }
        // A look every 100 ms: the history is long.
        look = now + ms(100);
        let hist = history(sim.reference());
        let moved = hist
            .iter()
            .filter(|(_, _, e)| moves_slots(e))
            .map(|(_, at, _)| *at)
            .max()
            .unwrap_or(0);
        let unfetched = unfetched_claims(&hist, &sim).max().unwrap_or(0);
        // The holding edge's wait starts when its watch shows the claim: up to a registry cut
        // (7 s) and a reconnection after the commit.
        let fetch_wait = (FETCH_WAIT + ms(10_000)).as_millis() as u64;
        let quiet = now_ms() >= moved + 2_500
            && now_ms() >= unfetched + fetch_wait
            && !sim.phones.iter().any(Phone::mid_call_setup);
        if quiet || now >= settle + SETTLE_MAX {
            debug(|| format!("settled after {:?}", now - settle));
            break;
        }
    }
    // Let every node apply the whole log (a lease renewal may be on its way to a follower).
    let level = |sim: &Sim| {
        let applied: BTreeSet<_> = sim
            .nodes
            .values()
            .flatten()
            .map(|n| n.state.data.read().unwrap().last_applied.map(|l| l.index))
            .collect();
        applied.len() == 1
    };
    let until = Instant::now() + ms(2_000);
    while !level(&sim) && Instant::now() < until {
        sim.step().await;
    }
    let finished = now_ms();

    // All nodes applied the same log to the same state.
    let states: Vec<(Option<u64>, String)> = sim
        .nodes
        .values()
        .flatten()
        .map(|n| {
            let d = n.state.data.read().unwrap();
            (
                d.last_applied.map(|l| l.index),
                serde_json::to_string(&d.orbit).unwrap(),
            )
        })
        .collect();
    let agreed = states.windows(2).all(|w| w[0] == w[1]);
    let node = sim.reference();
    let orbit: Orbit = node.state.data.read().unwrap().orbit.clone();
    let hist = history(node);
    let summary = check(seed, &sim, &hist, &orbit, finished);
    assert!(
        agreed,
        "seed {seed}: nodes disagree (applied {:?})",
        states.iter().map(|s| s.0).collect::<Vec<_>>()
    );

    for n in std::mem::take(&mut sim.nodes).into_values().flatten() {
        n.crash().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    summary
}

/// Everything checked after a run; the summary line.
fn check(
    seed: u64,
    sim: &Sim,
    hist: &[(u64, Millis, Event)],
    orbit: &Orbit,
    finished: Millis,
) -> Summary {
    let obs = &sim.obs;
    // The registry's own invariants: one call per slot, one claim per park.
    let mut slots: HashMap<u32, ParkId> = HashMap::new();
    let mut parks: HashMap<ParkId, orbit_state::Parked> = HashMap::new();
    let mut by_label: HashMap<String, Vec<ParkId>> = HashMap::new();
    let mut claims: HashMap<ParkId, String> = HashMap::new();
    let mut expired: HashMap<ParkId, Millis> = HashMap::new();
    let mut lapses = 0;
    for (i, _, ev) in hist {
        match ev {
            Event::Parked(p) => {
                assert!(
                    slots.insert(p.slot, p.id).is_none(),
                    "seed {seed}, index {i}: slot {} holds two calls",
                    p.slot
                );
                let label = p.call.caller_display.clone().unwrap_or_default();
                by_label.entry(label).or_default().push(p.id);
                parks.insert(p.id, p.clone());
            }
            Event::Claimed { parked, by } => {
                assert!(
                    claims.insert(parked.id, by.clone()).is_none(),
                    "seed {seed}, index {i}: park {} claimed twice",
                    parked.id
                );
                assert_eq!(
                    slots.remove(&parked.slot),
                    Some(parked.id),
                    "seed {seed}, index {i}"
                );
            }
            Event::Expired(p) => {
                let Phase::Recalling { since, .. } = p.phase else {
                    panic!("seed {seed}, index {i}: expired but not recalling")
                };
                assert!(since >= p.deadline, "seed {seed}, index {i}: expired early");
                assert!(
                    expired.insert(p.id, since).is_none(),
                    "seed {seed}, index {i}: park {} expired twice",
                    p.id
                );
            }
            Event::Ended { parked, .. } => {
                assert_eq!(
                    slots.remove(&parked.slot),
                    Some(parked.id),
                    "seed {seed}, index {i}"
                );
            }
            Event::LeaseLapsed { lost, .. } | Event::EdgeRestarted { lost, .. } => {
                lapses += 1;
                for p in lost {
                    slots.remove(&p.slot);
                }
            }
            _ => {}
        }
    }

    // Every retrieve answered was told whom it got, by the edge holding the call (over the
    // trunk for a call held at another site): the slot it dialled, the caller's name and URI.
    let mut confirmed = 0;
    for r in obs
        .retrieves
        .iter()
        .filter(|r| r.done.is_some_and(|d| d.0 < 300))
    {
        let (Some(label), Some((slot, user))) = (&r.label, &r.named) else {
            panic!(
                "seed {seed}: {}'s retrieve of {} answered without naming the caller",
                r.ext, r.slot
            )
        };
        assert_eq!(
            *slot, r.slot,
            "seed {seed}: {} dialled {} and was told it got {label} from {slot}",
            r.ext, r.slot
        );
        assert!(
            label.starts_with(&format!("c{user}n")),
            "seed {seed}: {} was told it got {label}, whose URI is {user}'s",
            r.ext
        );
        if r.reached.as_ref() == Some(label) {
            confirmed += 1;
        }
    }

    // Every caller held by one phone at most, which won the claim; the caller hears only it.
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (label, ext, _) in &obs.holders {
        holders.entry(label).or_default().insert(ext);
    }
    for (label, exts) in &holders {
        assert!(
            exts.len() <= 1,
            "seed {seed}: caller {label} held by {exts:?} at once"
        );
        let claimants: BTreeSet<&str> = by_label
            .get(*label)
            .into_iter()
            .flatten()
            .filter_map(|p| claims.get(p).map(String::as_str))
            .collect();
        for ext in exts {
            assert!(
                claimants.contains(ext),
                "seed {seed}: {ext} got caller {label} without winning its claim (claimants {claimants:?})"
            );
        }
    }
    let mut heard: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (label, ext) in &obs.heard {
        heard.entry(label).or_default().insert(ext);
    }
    for (label, exts) in &heard {
        assert!(
            exts.len() <= 1,
            "seed {seed}: caller {label} heard {exts:?}"
        );
        let held = holders.get(label).cloned().unwrap_or_default();
        assert!(
            exts.is_subset(&held),
            "seed {seed}: caller {label} heard {exts:?}, held by {held:?}"
        );
    }
    // The caller a retriever's 200 named is the one it greeted and heard back.
    for r in &obs.retrieves {
        for other in [&r.reached, &r.heard_by].into_iter().flatten() {
            assert_eq!(
                r.label.as_ref(),
                Some(other),
                "seed {seed}: {} was told it got {:?} and its greeting reached {other}",
                r.ext,
                r.label
            );
        }
    }

    // Recalls: for a committed expiry, never before the deadline, once per park.
    let mut recalled: HashMap<ParkId, BTreeSet<&str>> = HashMap::new();
    let mut carried = vec![];
    for r in &obs.recalls {
        let mine = by_label
            .get(&r.label)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut park = mine
            .iter()
            .map(|id| &parks[id])
            .filter(|p| p.slot == r.slot && p.parked_at <= r.at)
            .max_by_key(|p| p.parked_at)
            .unwrap_or_else(|| {
                panic!(
                    "seed {seed}: {} recalled for {} in {}, never parked there",
                    r.ext, r.label, r.slot
                )
            });
        // The known edge bug: the recall of the call's previous park, claimed while it rang
        // and then parked again, rings on into the new park.
        let before = mine
            .iter()
            .position(|id| *id == park.id)
            .and_then(|k| k.checked_sub(1))
            .map(|k| &parks[&mine[k]])
            .filter(|q| {
                q.call.call_id == park.call.call_id
                    && claims.contains_key(&q.id)
                    && expired.get(&q.id).is_some_and(|at| *at <= r.at)
            });
        if let Some(q) = before.filter(|_| r.at < park.deadline && !strict_recall()) {
            carried.push(format!(
                "{} rung at {} for {} (call {}) in park {} (parked at {}, due at {}), rung for park {} which expired at {} and was claimed; the caller's history: {:#?}",
                r.ext, r.at, r.label, r.call_id, park.id, park.parked_at, park.deadline, q.id, expired[&q.id], about(hist, &r.label)
            ));
            park = q;
        }
        assert!(
            r.at >= park.deadline,
            "seed {seed}: park {} recalled at {} (at {}, call {}) before its deadline {}; the caller's history: {:#?}",
            park.id,
            r.at,
            r.ext,
            r.call_id,
            park.deadline,
            about(hist, &r.label)
        );
        assert!(
            expired.contains_key(&park.id),
            "seed {seed}: park {} recalled without a committed expiry",
            park.id
        );
        recalled.entry(park.id).or_default().insert(&r.call_id);
    }
    for (park, calls) in &recalled {
        assert!(
            calls.len() <= 1,
            "seed {seed}: park {park} recalled {} times",
            calls.len()
        );
    }
    for c in &carried {
        eprintln!("seed {seed}: known edge bug (SIM_STRICT_RECALL=1 fails on it): {c}");
    }

    // Lamps: every phone shows the registry's state of every slot.
    for p in sim.phones.iter().filter(|p| p.role == Role::Colleague) {
        for slot in SLOTS {
            let want = orbit.in_slot(DOMAIN, slot).map(|p| p.id);
            let shown = p.lamps.get(&slot).and_then(|l| l.1);
            let replica = sim.edges[p.site]
                .orbit()
                .in_slot(DOMAIN, slot)
                .map(|p| p.id);
            let w = &sim.watches[p.site];
            assert_eq!(
                shown, want,
                "seed {seed}: {} at {} shows {shown:?} on {slot} (lamp {:?}), the registry {want:?}; the edge's replica {replica:?}, its watch at {} on node {:?}; history of the slot: {:#?}",
                p.ext, SITE_NAMES[p.site], p.lamps.get(&slot), w.after, w.node,
                hist.iter().filter(|(_, _, e)| e.slots().iter().any(|s| s.1 == slot)).collect::<Vec<_>>()
            );
        }
    }

    let end = check_liveness(seed, sim, hist, orbit);
    // Calls parked again by their holding edge after a claim of them went unfetched.
    let call_of = |e: &Event| match e {
        Event::Parked(p) | Event::Expired(p) | Event::RecallStage(p) => {
            Some(p.call.call_id.clone())
        }
        Event::Claimed { parked: p, .. } | Event::Ended { parked: p, .. } => {
            Some(p.call.call_id.clone())
        }
        _ => None,
    };
    let back = hist
        .iter()
        .enumerate()
        .filter(|(k, (_, at, e))| {
            let Event::Parked(p) = e else { return false };
            let before = hist[..*k]
                .iter()
                .rev()
                .find(|(_, _, e)| call_of(e).as_ref() == Some(&p.call.call_id));
            matches!(before, Some((_, t, Event::Claimed { .. })) if at - t >= FETCH_WAIT.as_millis() as u64)
        })
        .count();

    // Something happened.
    let retrieved = obs
        .retrieves
        .iter()
        .filter(|r| r.done.is_some_and(|d| d.0 < 300))
        .count();
    let cross = obs
        .retrieves
        .iter()
        .filter(|r| r.done.is_some_and(|d| d.0 < 300))
        .filter(|r| {
            let holder = r
                .label
                .as_ref()
                .and_then(|l| by_label.get(l))
                .and_then(|ids| ids.first())
                .map(|id| parks[id].call.edge.clone());
            holder.is_some_and(|e| e != SITE_NAMES[r.site])
        })
        .count();
    // Retrieves of one slot that were under way at once, from different sites.
    let mut fights = 0;
    for (i, a) in obs.retrieves.iter().enumerate() {
        let a_end = a.done.map_or(finished, |d| d.1);
        if obs.retrieves.iter().enumerate().any(|(j, b)| {
            i != j
                && a.slot == b.slot
                && a.site != b.site
                && b.sent <= a_end
                && a.sent <= b.done.map_or(finished, |d| d.1)
        }) {
            fights += 1;
        }
    }
    let recall_kept = obs
        .holders
        .iter()
        .filter(|(_, ext, _)| ext.ends_with("100"))
        .count();
    let line = format!(
        "seed {seed}: {} calls, {} parked ({} park failures), {} retrieves ({retrieved} got the call, {confirmed} of them named by the 200 as the caller who answered the greeting, {cross} across sites, {fights} in fights, {} cancelled), {} recalls ({recall_kept} kept, {} carried into a new park), {} claims, {lapses} leases lapsed, {} entries; faults: {} ({} leader crashes, edge cuts registry/home/trunk {:?}); {} resyncs; {} trunk claims lost ({back} calls back in their slot after an unfetched claim); {} parks left; at the end {} callers connected, {} parked, {} being recalled, {} stranded by a failed repark",
        obs.calls,
        parks.len(),
        obs.park_failed,
        obs.retrieves.len(),
        obs.retrieves.iter().filter(|r| r.cancelled).count(),
        obs.recalls.len(),
        carried.len(),
        claims.len(),
        hist.last().map_or(0, |h| h.0),
        sim.faults,
        sim.leader_kills,
        sim.edge_cuts,
        sim.resyncs,
        sim.lost_claims.len(),
        orbit.all_parked().count(),
        end.connected,
        end.parked,
        end.recalling,
        end.stranded.len(),
    );
    for s in &end.stranded {
        eprintln!("seed {seed}: known edge bug (SIM_STRICT_REPARK=1 fails on it): {s}");
    }
    assert!(
        parks.len() >= 20
            && retrieved >= 10
            && cross >= 3
            && fights >= 2
            && obs.recalls.len() >= 3
            && sim.faults >= 10
            && sim.leader_kills >= 1,
        "seed {seed}: not a history worth checking: {line}"
    );
    Summary { line }
}

/// Where the callers still in a call ended up.
struct End {
    connected: usize,
    parked: usize,
    recalling: usize,
    /// Callers left on music by the known repark bug (see [`strict_repark`]).
    stranded: Vec<String>,
}

/// `SIM_STRICT_REPARK=1` fails a run on the known edge bug instead of counting it: a call
/// claimed by another site and never fetched is parked again by its holding edge
/// (`orbit_edge`'s trunk `on_fetch_timeout`) with one proposal, whose failure (its slot taken
/// meanwhile, say by another call of that slot parked again at the same moment, or the
/// registry unavailable) nobody handles: the caller stays on music, in no slot, for good.
fn strict_repark() -> bool {
    std::env::var_os("SIM_STRICT_REPARK").is_some()
}

/// `SIM_STRICT_RECALL=1` fails a run on the other known edge bug instead of counting it: a
/// call whose recall is ringing when it is parked again keeps that recall ringing, and it now
/// belongs to the new park (`orbit_edge`'s `park::adopt_repark` does not stop it, and
/// `trunk::on_claimed` did not either): answered, it claims the new park before its deadline;
/// unanswered, it ends the new park as abandoned and hangs the caller up. It happens when a
/// retriever claims the call during the ring (the slot stays claimable) and cancels while its
/// claim is ordered (the claim is undone by a new park with a fresh timer), or when the holding
/// edge's watch, behind, brings the expiry, that claim and the new park at once. Seen from
/// the phones: a parker rung for a caller whose park is not due.
fn strict_recall() -> bool {
    std::env::var_os("SIM_STRICT_RECALL").is_some()
}

/// The last committed event about caller `label` if it is a claim: when, and what was claimed.
fn last_claim<'a>(
    hist: &'a [(u64, Millis, Event)],
    label: &str,
) -> Option<(Millis, &'a orbit_state::Parked)> {
    let of = |p: &orbit_state::Parked| p.call.caller_display.as_deref() == Some(label);
    hist.iter().rev().find_map(|(_, at, ev)| match ev {
        Event::Claimed { parked, .. } if of(parked) => Some(Some((*at, parked))),
        Event::Parked(p) | Event::Expired(p) | Event::RecallStage(p) if of(p) => Some(None),
        Event::Ended { parked, .. } if of(parked) => Some(None),
        Event::LeaseLapsed { lost, .. } | Event::EdgeRestarted { lost, .. }
            if lost.iter().any(of) =>
        {
            Some(None)
        }
        _ => None,
    })?
}

/// Liveness, after healing and the quiet period, from the phones' side: every caller still in
/// a call is connected to exactly one phone (whose greeting it heard last, and which heard its
/// name back), or parked in a slot the registry's final state has (every lamp of that slot
/// showing it), or being recalled from there. No caller is left on music in a call the
/// registry has in no slot, and no phone is left holding a call whose caller is gone.
fn check_liveness(seed: u64, sim: &Sim, hist: &[(u64, Millis, Event)], orbit: &Orbit) -> End {
    // The calls the phones hold (a retrieve answered, a recall answered): caller → (phone,
    // whether the caller answered its greeting).
    let mut held: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for p in &sim.phones {
        for d in p.dialogs.values() {
            if matches!(d.kind, Kind::Retrieve(_) | Kind::Recall) && d.state == St::Up {
                held.entry(&d.label).or_default().push((&p.ext, d.reached));
            }
        }
    }
    let mut end = End {
        connected: 0,
        parked: 0,
        recalling: 0,
        stranded: vec![],
    };
    for p in sim.phones.iter().filter(|p| p.role == Role::Caller) {
        for d in p.dialogs.values() {
            if d.kind != Kind::Out || d.state == St::Done {
                continue;
            }
            let label = d.label.as_str();
            let park = orbit
                .all_parked()
                .find(|x| x.call.caller_display.as_deref() == Some(label));
            let holders = held.remove(label).unwrap_or_default();
            let ok = match (d.state, park, holders.as_slice()) {
                (St::Up, None, [(ext, true)]) if d.greeted.as_deref() == Some(*ext) => {
                    end.connected += 1;
                    true
                }
                (St::Up, Some(x), []) => {
                    for c in sim.phones.iter().filter(|c| c.role == Role::Colleague) {
                        let shown = c.lamps.get(&x.slot).and_then(|l| l.1);
                        assert_eq!(
                            shown,
                            Some(x.id),
                            "seed {seed}: caller {label} parked in {} (park {}), {}'s lamp shows {shown:?}",
                            x.slot,
                            x.id,
                            c.ext
                        );
                    }
                    match x.phase {
                        Phase::Waiting => end.parked += 1,
                        Phase::Recalling { .. } => end.recalling += 1,
                    }
                    true
                }
                _ => false,
            };
            if ok {
                continue;
            }
            let what = format!(
                "caller {label} ({}) left {:?} (on music if nobody holds it), last greeted by {:?}; held by {holders:?}; in the registry's final state: {:?}; its history: {:#?}",
                p.ext,
                d.state,
                d.greeted,
                park.map(|x| (x.id, x.slot, &x.phase)),
                about(hist, label)
            );
            // The known edge bug: its holding edge parked it again after an unfetched claim,
            // and that proposal failed (slot taken meanwhile, or registry unavailable); nothing
            // tries again.
            let repark_failed = last_claim(hist, label).and_then(|(at, parked)| {
                sim.parks_failed
                    .get(&parked.call.call_id)
                    .filter(|(site, when, _)| SITE_NAMES[*site] == parked.call.edge && *when >= at)
            });
            match repark_failed {
                Some((_, when, why)) if !strict_repark() => end.stranded.push(format!(
                    "{what}; its holding edge's park proposal at {when} failed: {why}"
                )),
                _ => panic!("seed {seed}: {what}"),
            }
        }
    }
    assert!(
        held.is_empty(),
        "seed {seed}: phones left holding calls whose caller is in none: {held:?}"
    );
    end
}

/// The committed events about caller `label`'s parks, briefly.
fn about(hist: &[(u64, Millis, Event)], label: &str) -> Vec<String> {
    let of = |p: &orbit_state::Parked| p.call.caller_display.as_deref() == Some(label);
    let mut out = vec![];
    for (i, at, ev) in hist {
        let what = match ev {
            Event::Parked(p) if of(p) => {
                format!("parked {} in {} at {}", p.id, p.slot, p.call.edge)
            }
            Event::Claimed { parked, by } if of(parked) => format!("{} claimed by {by}", parked.id),
            Event::Expired(p) if of(p) => format!("{} expired", p.id),
            Event::RecallStage(p) if of(p) => format!("{} recall stage", p.id),
            Event::Ended { parked, reason } if of(parked) => {
                format!("{} ended: {reason:?}", parked.id)
            }
            Event::LeaseLapsed { edge, lost } | Event::EdgeRestarted { edge, lost, .. }
                if lost.iter().any(of) =>
            {
                format!("lost with {edge}")
            }
            _ => continue,
        };
        out.push(format!("#{i} at {at}: {what}"));
    }
    out
}

/// `SIM_TRACE=1`: the edges' logs, stamped with the simulated clock as `SIM_DEBUG`'s lines.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", now_ms() % 1_000_000)
    }
}

#[tokio::test(start_paused = true)]
async fn three_edges_on_three_registry_nodes_keep_what_phones_see_consistent_with_the_registry() {
    let started = std::time::Instant::now();
    if std::env::var_os("SIM_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("orbit_edge=info"))
            .with_ansi(false)
            .with_timer(SimTime)
            .try_init();
    }
    // `SIM_SEEDS=4-20` runs other seeds (one seed replays a failure).
    let seeds = std::env::var("SIM_SEEDS").unwrap_or_else(|_| "1-3".into());
    let (a, b) = seeds.split_once('-').unwrap_or((&seeds, &seeds));
    for seed in a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap() {
        let s = run(seed).await;
        eprintln!("{} [{:.1} s real]", s.line, started.elapsed().as_secs_f64());
    }
}
