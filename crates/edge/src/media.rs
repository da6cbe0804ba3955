//! The edge's media relay as effects: the core chooses each call's relay ports from its
//! [`PortPlan`] (so it can write them into SDP at once) and hands out [`MediaCmd`]s; the driver
//! carries them out on the relay's sockets ([`Relays`]) and reports back [`MediaEvent`]s
//! (digits pressed, silence, a port it could not bind). The core binds nothing and reads no
//! clock for media.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use orbit_media::{Clip, Codec, Leg};
use orbit_media::{PortPlan, PortPool, Session};
use tracing::warn;

/// What the relay must do, in order.
#[derive(Debug, Clone)]
pub enum MediaCmd {
    /// Relay call `call` through the port pairs at `ports` (RTP ports; RTCP one up), for its
    /// legs A and B.
    Open { call: u64, ports: [u16; 2] },
    /// What the party on `leg` announced in SDP, and the IP its signalling came from: the
    /// relay latches only onto a source with one of those IPs.
    Remote {
        call: u64,
        leg: Leg,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        source: IpAddr,
    },
    /// The party on `leg` sends RFC 4733 telephone-events with payload type `pt`: report its
    /// digits.
    Dtmf { call: u64, leg: Leg, pt: Option<u8> },
    /// Play `clip` to the party on `leg` (looped: music; else once: a prompt) instead of the
    /// other party's audio.
    Play {
        call: u64,
        leg: Leg,
        clip: Arc<Clip>,
        codec: Codec,
        pt: u8,
        looped: bool,
    },
    /// Let the party on `leg` hear the other party again.
    Bridge { call: u64, leg: Leg },
    /// The party on `leg` has gone; the next one latches afresh.
    Vacate { call: u64, leg: Leg },
    /// The call is over: stop relaying (its ports stay bound for reuse).
    Close { call: u64 },
    /// Close the sockets at these ports (released long enough ago).
    Unbind { ports: Vec<u16> },
}

/// Something the relay saw that the core must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A party pressed a digit.
    Digit { call: u64, leg: Leg, digit: char },
    /// No packet from either party of `call` for `idle` (reported every second while it
    /// lasts).
    Silent { call: u64, idle: Duration },
    /// The relay could not open `call`'s ports.
    Failed { call: u64, error: String },
}

/// A call's relay ports, as the core knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relay {
    pub call: u64,
    pub ports: [u16; 2],
    pub ip: IpAddr,
}

impl Relay {
    /// The relay address the party on `leg` must send to.
    pub fn local(&self, leg: Leg) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports[leg as usize])
    }

    /// See [`MediaCmd::Remote`].
    pub fn set_remote(
        &self,
        media: &mut Media,
        leg: Leg,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        source: IpAddr,
    ) {
        media.push(MediaCmd::Remote {
            call: self.call,
            leg,
            rtp,
            rtcp,
            source,
        });
    }

    /// See [`MediaCmd::Dtmf`].
    pub fn set_dtmf(&self, media: &mut Media, leg: Leg, pt: Option<u8>) {
        media.push(MediaCmd::Dtmf {
            call: self.call,
            leg,
            pt,
        });
    }

    /// See [`MediaCmd::Play`].
    pub fn play(
        &self,
        media: &mut Media,
        leg: Leg,
        clip: Arc<Clip>,
        (codec, pt): (Codec, u8),
        looped: bool,
    ) {
        media.push(MediaCmd::Play {
            call: self.call,
            leg,
            clip,
            codec,
            pt,
            looped,
        });
    }

    pub fn bridge(&self, media: &mut Media, leg: Leg) {
        media.push(MediaCmd::Bridge {
            call: self.call,
            leg,
        });
    }

    pub fn vacate(&self, media: &mut Media, leg: Leg) {
        media.push(MediaCmd::Vacate {
            call: self.call,
            leg,
        });
    }
}

/// The core's side of the relay: its port plan and the commands not yet taken.
pub(crate) struct Media {
    ip: IpAddr,
    plan: PortPlan,
    out: Vec<MediaCmd>,
}

impl Media {
    pub fn new(ip: IpAddr, plan: PortPlan) -> Media {
        Media {
            ip,
            plan,
            out: vec![],
        }
    }

    /// Relay ports for `call`, if two pairs are free.
    pub fn open(
        &mut self,
        now: Instant,
        call: u64,
        rng: &mut impl rand::RngCore,
    ) -> Result<Relay, &'static str> {
        let a = self.plan.take(now, rng).ok_or("no free relay ports")?;
        let Some(b) = self.plan.take(now, rng) else {
            self.plan.release(now, a);
            return Err("no free relay ports");
        };
        self.out.push(MediaCmd::Open {
            call,
            ports: [a, b],
        });
        Ok(Relay {
            call,
            ports: [a, b],
            ip: self.ip,
        })
    }

    /// The call is done with its relay.
    pub fn close(&mut self, now: Instant, r: Relay) {
        self.out.push(MediaCmd::Close { call: r.call });
        for p in r.ports {
            self.plan.release(now, p);
        }
    }

    /// The relay could not bind `r`'s ports: its sockets are gone, and the ports are taken
    /// last from now on.
    pub fn failed(&mut self, r: Relay) {
        for p in r.ports {
            self.plan.unusable(p);
        }
    }

    /// Upkeep, every second: close ports released long enough ago.
    pub fn maintain(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        let ports = self.plan.close_due(now, rng);
        if !ports.is_empty() {
            self.out.push(MediaCmd::Unbind { ports });
        }
    }

    pub fn push(&mut self, cmd: MediaCmd) {
        self.out.push(cmd);
    }

    pub fn take(&mut self) -> Vec<MediaCmd> {
        std::mem::take(&mut self.out)
    }

    /// Port pairs the relay has in all.
    pub fn capacity(&self) -> usize {
        self.plan.capacity()
    }

    /// Port pairs attached to calls.
    pub fn in_use(&self) -> usize {
        self.plan.in_use()
    }
}

/// The driver's side: the relay's sockets, one session per call, carrying out [`MediaCmd`]s.
pub struct Relays {
    pool: PortPool,
    sessions: HashMap<u64, Session>,
    /// Where digits go (the driver feeds them to the core); none: digits are not watched.
    digits: Option<tokio::sync::mpsc::UnboundedSender<MediaEvent>>,
}

impl Relays {
    /// Parties hearing music or a prompt now, and the packets the player has sent them so far.
    pub fn music(&self) -> (usize, u64) {
        let playing = self.sessions.values().map(Session::legs_playing).sum();
        (playing, self.pool.player_usage().1)
    }

    /// Packets forwarded and dropped by this edge's relay so far (ended calls and live ones).
    pub fn packets(&self) -> (u64, u64) {
        let (mut f, mut d) = self.pool.ended_packets();
        for s in self.sessions.values() {
            let (sf, sd) = s.packets();
            f += sf;
            d += sd;
        }
        (f, d)
    }

    /// `pool` must be one whose ports are placed by the caller ([`PortPool::placed`]).
    pub fn new(
        pool: PortPool,
        digits: Option<tokio::sync::mpsc::UnboundedSender<MediaEvent>>,
    ) -> Relays {
        Relays {
            pool,
            sessions: HashMap::new(),
            digits,
        }
    }

    /// Carry out `cmd`; an event for the core if it failed.
    pub fn apply(&mut self, cmd: MediaCmd) -> Option<MediaEvent> {
        match cmd {
            MediaCmd::Open { call, ports } => match Session::open_at(&self.pool, ports) {
                Ok(s) => {
                    if let Some(tx) = &self.digits {
                        let tx = tx.clone();
                        s.on_dtmf(Arc::new(move |leg, digit| {
                            let _ = tx.send(MediaEvent::Digit { call, leg, digit });
                        }));
                    }
                    self.sessions.insert(call, s);
                }
                Err(e) => {
                    warn!(call, ?ports, error = %e, "relay ports unavailable");
                    self.pool.unbind(&ports);
                    return Some(MediaEvent::Failed {
                        call,
                        error: e.to_string(),
                    });
                }
            },
            MediaCmd::Remote {
                call,
                leg,
                rtp,
                rtcp,
                source,
            } => {
                if let Some(s) = self.sessions.get(&call) {
                    s.set_remote(leg, rtp, rtcp);
                    s.set_source(leg, Some(source));
                }
            }
            MediaCmd::Dtmf { call, leg, pt } => {
                if let Some(s) = self.sessions.get(&call) {
                    s.set_dtmf(leg, pt);
                }
            }
            MediaCmd::Play {
                call,
                leg,
                clip,
                codec,
                pt,
                looped,
            } => {
                if let Some(s) = self.sessions.get(&call) {
                    s.play(leg, clip, codec, pt, looped);
                }
            }
            MediaCmd::Bridge { call, leg } => {
                if let Some(s) = self.sessions.get(&call) {
                    s.bridge(leg);
                }
            }
            MediaCmd::Vacate { call, leg } => {
                if let Some(s) = self.sessions.get(&call) {
                    s.vacate(leg);
                }
            }
            MediaCmd::Close { call } => {
                self.sessions.remove(&call);
            }
            MediaCmd::Unbind { ports } => self.pool.unbind(&ports),
        }
        None
    }

    /// Calls silent for a second or more, and for how long.
    pub fn silent(&self) -> Vec<MediaEvent> {
        self.sessions
            .iter()
            .filter_map(|(&call, s)| {
                let idle = s.idle();
                (idle >= Duration::from_secs(1)).then_some(MediaEvent::Silent { call, idle })
            })
            .collect()
    }
}
