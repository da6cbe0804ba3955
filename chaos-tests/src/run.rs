//! One chaos run: three sites on hosts of their own, phones at each parking calls into
//! slots of one lot, retrieving them from the other sites (sometimes two at once), and
//! leaving the rest to be recalled; faults from a seeded schedule meanwhile; then the
//! phones' own record held to the lot's promises.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{self, Report};
use crate::cluster::{Cluster, ClusterError, Proc};
use crate::net::{Net, NetError, Way};
use crate::observed;
use crate::phones::{Phone, Phones};
use crate::sipp_log::Micros;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// How long the phones park and retrieve; the run then waits for the last recalls.
    pub seconds: u64,
    /// The lot's parking time.
    pub park_secs: u64,
    /// How late a recall may come beyond its deadline, before the faults' own time is added:
    /// an election and the edge learning of it.
    pub election_ms: i64,
    /// How far the wall clock of site C's processes is off (whole seconds; 0: none).
    pub skew_ms: i64,
    /// Only leadership transfers (to site C's node when its clock is off), no other fault.
    pub transfers_only: bool,
}

/// The faults the schedule makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the registry leader, started again after the fault's time.
    KillLeader,
    /// SIGSTOP the leader for the fault's time (longer than an election), then SIGCONT.
    PauseLeader,
    /// A site's host cut off from the others both ways.
    CutSite(usize),
    /// The leader's host hears nothing from the others, while they hear it.
    DeafLeader,
    /// `kill -9` a follower, started again after the fault's time.
    KillFollower,
    /// `kill -9` the leader and a follower at once: no quorum until they are started again.
    QuorumLost,
    /// `kill -9` a site's edge, with the calls it holds, started again after the fault's time
    /// (its phones then register again, as phones do when their edge comes back). The calls
    /// it held are lost: the checker holds no park made there before the kill to its promise.
    KillEdge(usize),
    /// The leadership handed to another voter, as an operator does (to site C's node when
    /// its clock is off: the deadlines other leaders stamped are then its to fire).
    Transfer,
    /// A follower's disk filled (its data directory is a tmpfs): its next write fails and
    /// the process ends, saying why; the disk is freed after the fault's time and the node
    /// started again, as a supervisor would.
    DiskFull,
}

impl Fault {
    /// The fault's kind, whatever it was aimed at.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillLeader => "kill leader",
            Fault::PauseLeader => "pause leader",
            Fault::CutSite(_) => "cut site",
            Fault::DeafLeader => "deaf leader",
            Fault::KillFollower => "kill follower",
            Fault::QuorumLost => "quorum lost",
            Fault::KillEdge(_) => "kill edge",
            Fault::Transfer => "transfer",
            Fault::DiskFull => "disk full",
        }
    }
}

/// A fault as it was made.
#[derive(Debug, Clone)]
pub struct Made {
    pub fault: Fault,
    /// The host it was aimed at (the leader's, for the faults that aim at the leader).
    pub host: usize,
    /// When it began, by the machine's clock (the phones').
    pub began: Micros,
    /// How long it held.
    pub hold: Duration,
}

impl std::fmt::Display for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fault {:?} on host {} at {} for {:?}",
            self.fault, self.host, self.began, self.hold
        )
    }
}

/// A run's figures and verdict.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub faults: Vec<Made>,
    pub parks_tried: usize,
    pub retrieves_tried: usize,
    pub report: Report,
    /// Processes that ended without the schedule killing them.
    pub crashed: Vec<(Proc, String)>,
    /// Each process's peak resident memory (VmHWM) at the start of the workload and at its
    /// end, KiB (a process restarted meanwhile: its own).
    pub memory: Vec<(Proc, u64, u64)>,
}

impl Outcome {
    /// The one line a run ends with.
    pub fn line(&self) -> String {
        let p = |q| {
            self.report
                .late_percentile(q)
                .map_or("-".to_string(), |v| v.to_string())
        };
        format!(
            "seed {} faults {} parks {} (made {}, unknown {}, lost with an edge {}) retrieves {} (won {}) recalls {} late ms p50 {} p99 {} max {} crashed {} violations {}",
            self.seed,
            self.faults.len(),
            self.parks_tried,
            self.report.parks_made,
            self.report.parks_unknown,
            self.report.lost_with_edge,
            self.retrieves_tried,
            self.report.retrieved,
            self.report.recalled,
            p(50.0),
            p(99.0),
            p(100.0),
            self.crashed.len(),
            self.report.violations.len()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("a phone could not register: {0}")]
    Register(String),
}

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
const SLOTS: std::ops::RangeInclusive<u32> = 701..=709;
/// Names the parked phone at each site answers to, one per park in turn (x100 to x129), so
/// that a delivery names its park: a site parks one call every 1 to 2.5 s, and a name comes
/// back after 30 parks, long after the call that had it was delivered or recalled.
const PARKED_NAMES: u32 = 30;

fn now_us() -> Micros {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as Micros
}

/// `<site number><n>`: 1001 at site A, 2003 at site B.
fn ext(site: usize, n: u32) -> String {
    format!("{}{:03}", site + 1, n)
}

/// A park made by a phone at a site, the slot it asked for, and the parked party's name.
struct Parking {
    site: usize,
    slot: u32,
    parked: String,
    phone: Phone,
}

/// Site `s`'s standing phones, registered and answering: x001 is parked (answers and waits,
/// as x100 to x129 too), x002 parks and takes its recalls. (x003, which retrieves, only calls
/// out.) Registered from the ports they answer on: the edge sends to where a REGISTER came
/// from.
fn stand_up(phones: &Phones, s: usize) -> Result<Vec<(usize, Phone)>, RunError> {
    let mut out = vec![];
    for (n, scenario) in [(1, "uas_answer.xml"), (2, "uas_recall_answer.xml")] {
        let port = 5100 + n as u16;
        let names = std::iter::once(ext(s, n));
        let names: Vec<String> = match n {
            1 => names
                .chain((100..100 + PARKED_NAMES).map(|k| ext(s, k)))
                .collect(),
            _ => names.collect(),
        };
        for e in names {
            if !phones.register(s, &e, port) {
                return Err(RunError::Register(e));
            }
        }
        let e = ext(s, n);
        let rtp = (30000 + n).to_string();
        out.push((
            s,
            phones.start(
                s,
                &format!("{e}-{}", scenario.trim_end_matches(".xml")),
                scenario,
                port,
                &["-m", "1000000", "-d", "300", "-key", "rtpport", &rtp],
            ),
        ));
    }
    Ok(out)
}

/// Carry out `plan` with `orbitd`, the SIPp scenarios in `scenarios`, files under `dir`.
pub fn run(orbitd: &Path, scenarios: &Path, dir: &Path, plan: &Plan) -> Result<Outcome, RunError> {
    let net = Net::new(&SITES)?;
    let lot = format!(
        "[[edge.tenant.lots]]\npark_ext = \"700\"\nslots = \"{}-{}\"\nparking_secs = {}\nrecall_ring_secs = 30\n",
        SLOTS.start(),
        SLOTS.end(),
        plan.park_secs
    );
    let parked_names = |s| (100..100 + PARKED_NAMES).map(move |n| ext(s, n));
    let exts: Vec<String> = (0..3)
        .flat_map(|s| (1..=3).map(move |n| ext(s, n)).chain(parked_names(s)))
        .collect();
    // The last host's clocks off by `skew_ms`, if asked.
    let skew = [0, 0, plan.skew_ms];
    let mut cluster = Cluster::start(&net, orbitd, dir, &lot, &exts, 15, &skew)?;
    let phones = Phones::new(&net, &dir.join("phones"), scenarios);
    let mut standing = vec![];
    for s in 0..3 {
        standing.extend(stand_up(&phones, s)?);
    }
    let standing = Mutex::new(standing);
    let memory_at_start: Vec<(Proc, u64)> = cluster
        .all()
        .into_iter()
        .map(|p| (p, cluster.rss_kib(p).unwrap_or(0)))
        .collect();

    let parks: Mutex<Vec<Parking>> = Mutex::new(vec![]);
    let retrieves: Mutex<Vec<(u32, Phone)>> = Mutex::new(vec![]);
    let tried = AtomicUsize::new(0);
    let until = Instant::now() + Duration::from_secs(plan.seconds);
    let faults = std::thread::scope(|sc| {
        for s in 0..3 {
            let (phones, parks, retrieves, tried) = (&phones, &parks, &retrieves, &tried);
            let seed = plan.seed.wrapping_add(s as u64);
            let park_secs = plan.park_secs;
            sc.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut n = 0;
                while Instant::now() < until {
                    let slot = rng.gen_range(SLOTS);
                    let parker = ext(s, 2);
                    let parked = ext(s, 100 + n % PARKED_NAMES);
                    n += 1;
                    let phone = phones.uac(
                        s,
                        &format!("{parker}-park-{slot}"),
                        "uac_park.xml",
                        &parker,
                        &parked,
                        &[
                            ("rtpport", "30010"),
                            ("park_to", &slot.to_string()),
                            ("refer_params", ""),
                        ],
                    );
                    parks.lock().unwrap().push(Parking {
                        site: s,
                        slot,
                        parked,
                        phone,
                    });
                    tried.fetch_add(1, Ordering::Relaxed);
                    if rng.gen_bool(0.5) {
                        // From another site, within the parking time or just after it (racing
                        // the recall); now and then from both other sites at once.
                        let after = rng.gen_range(1_000..(park_secs * 1000 + 1_500));
                        let both = rng.gen_bool(0.3);
                        let first = (s + rng.gen_range(1..3)) % 3;
                        let sites: Vec<usize> = if both {
                            (0..3).filter(|&o| o != s).collect()
                        } else {
                            vec![first]
                        };
                        sc.spawn(move || {
                            std::thread::sleep(Duration::from_millis(after));
                            for o in sites {
                                let who = ext(o, 3);
                                let phone = phones.uac(
                                    o,
                                    &format!("{who}-retrieve-{slot}"),
                                    "uac_call.xml",
                                    &who,
                                    &slot.to_string(),
                                    &[("rtpport", "30020")],
                                );
                                retrieves.lock().unwrap().push((slot, phone));
                            }
                        });
                    }
                    std::thread::sleep(Duration::from_millis(rng.gen_range(1_000..2_500)));
                }
            });
        }
        // The schedule: a fault every few seconds, each for a while, until the workload ends.
        let c = &mut cluster;
        let net = &net;
        let (phones, standing) = (&phones, &standing);
        let skewed = plan.skew_ms != 0;
        let (seed, transfers_only) = (plan.seed, plan.transfers_only);
        let schedule = sc.spawn(move || {
            let mut faults = vec![];
            let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
            std::thread::sleep(Duration::from_secs(3));
            while Instant::now() + Duration::from_secs(6) < until {
                let fault = match if transfers_only {
                    7
                } else {
                    rng.gen_range(0..9)
                } {
                    0 => Fault::KillLeader,
                    1 => Fault::PauseLeader,
                    2 => Fault::CutSite(rng.gen_range(0..3)),
                    3 => Fault::DeafLeader,
                    4 => Fault::KillFollower,
                    5 => Fault::QuorumLost,
                    6 => Fault::KillEdge(rng.gen_range(0..3)),
                    7 => Fault::Transfer,
                    _ => Fault::DiskFull,
                };
                let hold = Duration::from_millis(rng.gen_range(1_500..4_000));
                let began = now_us();
                let Some(leader) = c.find_leader() else {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                };
                let follower = (leader + rng.gen_range(1..3)) % 3;
                let host = match fault {
                    Fault::CutSite(s) | Fault::KillEdge(s) => s,
                    Fault::KillFollower | Fault::DiskFull => follower,
                    // To the skewed node if there is one (and it does not lead already).
                    Fault::Transfer if skewed && leader != 2 => 2,
                    Fault::Transfer => follower,
                    _ => leader,
                };
                match fault {
                    Fault::KillLeader => {
                        c.kill(Proc::Registry(leader));
                        std::thread::sleep(hold);
                        c.spawn(Proc::Registry(leader)).expect("restart");
                    }
                    Fault::PauseLeader => {
                        c.pause(Proc::Registry(leader));
                        std::thread::sleep(hold);
                        c.resume(Proc::Registry(leader));
                    }
                    Fault::CutSite(s) => {
                        let others: Vec<usize> = (0..3).filter(|&o| o != s).collect();
                        net.cut(s, &others, Way::Both).expect("cut");
                        std::thread::sleep(hold);
                        net.heal(s).expect("heal");
                    }
                    Fault::DeafLeader => {
                        let others: Vec<usize> = (0..3).filter(|&o| o != leader).collect();
                        net.cut(leader, &others, Way::Inbound).expect("cut");
                        std::thread::sleep(hold);
                        net.heal(leader).expect("heal");
                    }
                    Fault::KillFollower => {
                        c.kill(Proc::Registry(follower));
                        std::thread::sleep(hold);
                        c.spawn(Proc::Registry(follower)).expect("restart");
                    }
                    Fault::QuorumLost => {
                        c.kill(Proc::Registry(leader));
                        c.kill(Proc::Registry(follower));
                        std::thread::sleep(hold);
                        c.spawn(Proc::Registry(leader)).expect("restart");
                        c.spawn(Proc::Registry(follower)).expect("restart");
                    }
                    Fault::DiskFull => {
                        c.fill_disk(follower).expect("filling a disk");
                        // It ends at its next write (leases are renewed every 5 s).
                        let p = Proc::Registry(follower);
                        let ended = c.wait_exit(p, hold + Duration::from_secs(10));
                        c.free_disk(follower).expect("freeing a disk");
                        eprintln!(
                            "disk full at registry {}: {}",
                            follower + 1,
                            ended
                                .as_deref()
                                .unwrap_or("still running (nothing written)")
                        );
                        if ended.is_some() {
                            c.spawn(p).expect("restart");
                        }
                    }
                    Fault::Transfer => {
                        if !c.transfer(leader, host) {
                            // Refused (a member behind): not a fault made; the next one
                            // still waits its turn.
                            std::thread::sleep(Duration::from_millis(2_000));
                            continue;
                        }
                        std::thread::sleep(hold);
                    }
                    Fault::KillEdge(s) => {
                        c.kill(Proc::Edge(s));
                        std::thread::sleep(hold);
                        c.restart_edge(s).expect("the edge back");
                        let mut st = standing.lock().unwrap();
                        for (_, p) in st.iter_mut().filter(|(site, _)| *site == s) {
                            p.stop();
                        }
                        st.extend(stand_up(phones, s).expect("phones registered again"));
                    }
                }
                faults.push(Made {
                    fault,
                    host,
                    began,
                    hold,
                });
                std::thread::sleep(Duration::from_millis(rng.gen_range(2_000..4_000)));
            }
            faults
        });
        schedule.join().expect("the schedule")
    });
    // The last parks' recalls: their time, the allowance, the recall's ring.
    let worst_fault = faults.iter().map(|f| f.hold).max().unwrap_or_default();
    let allowance_ms = plan.election_ms + worst_fault.as_millis() as i64;
    std::thread::sleep(
        Duration::from_secs(plan.park_secs + 3) + Duration::from_millis(allowance_ms as u64),
    );
    let mut parks = parks.into_inner().unwrap();
    let mut retrieves = retrieves.into_inner().unwrap();
    // Five seconds in all for the phones still at it (a phone whose edge was killed under
    // its call waits for ever), then they are stopped: not five each, one after the other.
    let last = Instant::now() + Duration::from_secs(5);
    let phones_left = parks
        .iter_mut()
        .map(|p| &mut p.phone)
        .chain(retrieves.iter_mut().map(|(_, r)| r));
    for p in phones_left {
        p.wait(last.saturating_duration_since(Instant::now()));
    }
    let end = now_us();
    // The standing phones stop before they are read: no message half written.
    let mut standing = standing.into_inner().unwrap();
    for (_, p) in standing.iter_mut() {
        p.stop();
    }
    // (A process not there to ask reads as too large: the check fails rather than passes.)
    let memory = memory_at_start
        .into_iter()
        .map(|(p, start)| (p, start, cluster.rss_kib(p).unwrap_or(u64::MAX)))
        .collect();
    let crashed = cluster.crashed();

    // What the phones saw.
    let timeout_us = plan.park_secs as Micros * 1_000_000;
    let seen_parks: Vec<_> = parks
        .iter()
        .filter_map(|p| {
            let held_at = SITES[p.site];
            observed::park(&p.phone.seen(), p.slot, &p.parked, held_at, timeout_us)
        })
        .collect();
    let mut deliveries: Vec<_> = retrieves
        .iter()
        .filter_map(|(slot, r)| observed::retrieve(&r.seen(), *slot, &r.name))
        .collect();
    for (_, phone) in &standing {
        deliveries.extend(observed::recalls(&phone.seen(), &phone.name));
    }
    // Parks held by an edge when it was killed are lost with it.
    let edge_kills: Vec<(String, Micros)> = faults
        .iter()
        .filter_map(|f| match f.fault {
            Fault::KillEdge(s) => Some((SITES[s].to_string(), f.began)),
            _ => None,
        })
        .collect();
    let report = checker::check(
        &seen_parks,
        &deliveries,
        &edge_kills,
        allowance_ms * 1000,
        end,
    );
    Ok(Outcome {
        seed: plan.seed,
        faults,
        parks_tried: tried.load(Ordering::Relaxed),
        retrieves_tried: retrieves.len(),
        report,
        crashed,
        memory,
    })
}

/// Where the SIPp scenarios are, from this crate's directory.
/// `orbitd` beside the running test's own binary (`target/<profile>/deps/..`), as a workspace
/// build leaves it.
pub fn orbitd_beside_test() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("orbitd"))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p orbitd)",
        bin.display()
    );
    bin
}

pub fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/orbitd/tests/sipp")
}
