//! The edge's view of the media relay, as a trait so that the call model runs in tests
//! without sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use orbit_media::{Clip, Codec, Leg};
use orbit_media::{PortPool, Session};

pub trait MediaSession: Send {
    /// Relay address the party on `leg` must send to.
    fn local(&self, leg: Leg) -> SocketAddr;
    /// What the party on `leg` announced in SDP, and the IP its signalling came from: the
    /// relay latches only onto a source with one of those IPs.
    fn set_remote(
        &self,
        leg: Leg,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        source: IpAddr,
    );
    /// Time since the last packet from either party.
    fn idle(&self) -> Duration;
    /// Play `clip` to the party on `leg` (looped: music; else once: a prompt) instead of the
    /// other party's audio.
    fn play(&self, leg: Leg, clip: Arc<Clip>, codec: Codec, pt: u8, looped: bool);
    /// Let the party on `leg` hear the other party again.
    fn bridge(&self, leg: Leg);
    /// The party on `leg` has gone; the next one latches afresh.
    fn vacate(&self, leg: Leg);
    /// The party on `leg` sends RFC 4733 telephone-events with payload type `pt`: report its
    /// digits as [`MediaEvent`]s.
    fn set_dtmf(&self, leg: Leg, pt: Option<u8>);
}

/// Something the media saw that the call model must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaEvent {
    pub call: u64,
    pub leg: Leg,
    pub digit: char,
}

pub trait MediaFactory: Send {
    /// Media for call `call` (named in the [`MediaEvent`]s it reports).
    fn open(&mut self, call: u64) -> Result<Box<dyn MediaSession>, String>;
    /// Port pairs in use.
    fn in_use(&self) -> usize;
    /// Periodic upkeep (closing long-idle relay endpoints); called every second.
    fn maintain(&mut self) {}
}

impl MediaSession for Session {
    fn local(&self, leg: Leg) -> SocketAddr {
        Session::local(self, leg)
    }
    fn set_remote(
        &self,
        leg: Leg,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        source: IpAddr,
    ) {
        Session::set_remote(self, leg, rtp, rtcp);
        Session::set_source(self, leg, Some(source));
    }
    fn idle(&self) -> Duration {
        Session::idle(self)
    }
    fn play(&self, leg: Leg, clip: Arc<Clip>, codec: Codec, pt: u8, looped: bool) {
        Session::play(self, leg, clip, codec, pt, looped)
    }
    fn bridge(&self, leg: Leg) {
        Session::bridge(self, leg)
    }
    fn vacate(&self, leg: Leg) {
        Session::vacate(self, leg)
    }
    fn set_dtmf(&self, leg: Leg, pt: Option<u8>) {
        Session::set_dtmf(self, leg, pt)
    }
}

/// The real relay: sockets from a port range. Needs a tokio runtime.
pub struct RelayFactory {
    pub pool: PortPool,
    /// Where digits go (the driver feeds them to the core); none: digits are not watched.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<MediaEvent>>,
}

impl MediaFactory for RelayFactory {
    fn open(&mut self, call: u64) -> Result<Box<dyn MediaSession>, String> {
        let s = Session::open(&self.pool).map_err(|e| e.to_string())?;
        if let Some(tx) = &self.events {
            let tx = tx.clone();
            s.on_dtmf(Arc::new(move |leg, digit| {
                let _ = tx.send(MediaEvent { call, leg, digit });
            }));
        }
        Ok(Box::new(s))
    }
    fn in_use(&self) -> usize {
        self.pool.in_use()
    }
    fn maintain(&mut self) {
        self.pool.maintain()
    }
}

/// Media without sockets, for the call model's tests and the fuzzer: hands out addresses from
/// a counter and lets the test set how long the media has been idle.
#[derive(Clone, Default)]
pub struct FakeMedia {
    state: std::sync::Arc<std::sync::Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    next_port: u16,
    open: usize,
    idle: Duration,
    remotes: Vec<(Leg, Option<SocketAddr>)>,
    /// What was played, bridged and vacated, in order ("play A music PCMU", "bridge A", ...).
    feeds: Vec<String>,
}

struct FakeSession {
    ports: [u16; 2],
    state: std::sync::Arc<std::sync::Mutex<FakeState>>,
}

impl FakeMedia {
    /// Pretend no packet has arrived for this long, on every session.
    pub fn set_idle(&self, idle: Duration) {
        self.state.lock().unwrap().idle = idle;
    }
    pub fn open_sessions(&self) -> usize {
        self.state.lock().unwrap().open
    }
    /// Every play/bridge/vacate so far, in order; taken.
    pub fn take_feeds(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().feeds)
    }
    /// Every `set_remote` call so far, in order.
    pub fn remotes(&self) -> Vec<(Leg, Option<SocketAddr>)> {
        self.state.lock().unwrap().remotes.clone()
    }
}

impl MediaFactory for FakeMedia {
    fn open(&mut self, _call: u64) -> Result<Box<dyn MediaSession>, String> {
        let mut s = self.state.lock().unwrap();
        if s.next_port == 0 {
            s.next_port = 40_000;
        }
        let p = s.next_port;
        s.next_port += 4;
        s.open += 1;
        Ok(Box::new(FakeSession {
            ports: [p, p + 2],
            state: self.state.clone(),
        }))
    }
    fn in_use(&self) -> usize {
        self.state.lock().unwrap().open * 2
    }
}

impl MediaSession for FakeSession {
    fn local(&self, leg: Leg) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[leg as usize]))
    }
    fn set_remote(
        &self,
        leg: Leg,
        rtp: Option<SocketAddr>,
        _rtcp: Option<SocketAddr>,
        _source: IpAddr,
    ) {
        self.state.lock().unwrap().remotes.push((leg, rtp));
    }
    fn idle(&self) -> Duration {
        self.state.lock().unwrap().idle
    }
    fn play(&self, leg: Leg, clip: Arc<Clip>, codec: Codec, _pt: u8, looped: bool) {
        let what = if looped { "music" } else { "prompt" };
        let ms = clip.duration().as_millis();
        self.state
            .lock()
            .unwrap()
            .feeds
            .push(format!("play {leg:?} {what} {} {ms}ms", codec.name()));
    }
    fn bridge(&self, leg: Leg) {
        self.state
            .lock()
            .unwrap()
            .feeds
            .push(format!("bridge {leg:?}"));
    }
    fn vacate(&self, leg: Leg) {
        self.state
            .lock()
            .unwrap()
            .feeds
            .push(format!("vacate {leg:?}"));
    }
    fn set_dtmf(&self, _leg: Leg, _pt: Option<u8>) {}
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        self.state.lock().unwrap().open -= 1;
    }
}
