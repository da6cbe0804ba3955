//! The edge's view of the media relay, as a trait so that the call model runs in tests
//! without sockets.

use std::net::SocketAddr;
use std::time::Duration;

pub use orbit_media::Leg;
use orbit_media::{PortPool, Session};

pub trait MediaSession: Send {
    /// Relay address the party on `leg` must send to.
    fn local(&self, leg: Leg) -> SocketAddr;
    /// What the party on `leg` announced in SDP.
    fn set_remote(&self, leg: Leg, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>);
    /// Time since the last packet from either party.
    fn idle(&self) -> Duration;
}

pub trait MediaFactory: Send {
    fn open(&mut self) -> Result<Box<dyn MediaSession>, String>;
    /// Port pairs in use.
    fn in_use(&self) -> usize;
    /// Periodic upkeep (closing long-idle relay endpoints); called every second.
    fn maintain(&mut self) {}
}

impl MediaSession for Session {
    fn local(&self, leg: Leg) -> SocketAddr {
        Session::local(self, leg)
    }
    fn set_remote(&self, leg: Leg, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        Session::set_remote(self, leg, rtp, rtcp)
    }
    fn idle(&self) -> Duration {
        Session::idle(self)
    }
}

/// The real relay: sockets from a port range. Needs a tokio runtime.
pub struct RelayFactory {
    pub pool: PortPool,
}

impl MediaFactory for RelayFactory {
    fn open(&mut self) -> Result<Box<dyn MediaSession>, String> {
        Session::open(&self.pool)
            .map(|s| Box::new(s) as Box<dyn MediaSession>)
            .map_err(|e| e.to_string())
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
    /// Every `set_remote` call so far, in order.
    pub fn remotes(&self) -> Vec<(Leg, Option<SocketAddr>)> {
        self.state.lock().unwrap().remotes.clone()
    }
}

impl MediaFactory for FakeMedia {
    fn open(&mut self) -> Result<Box<dyn MediaSession>, String> {
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
    fn set_remote(&self, leg: Leg, rtp: Option<SocketAddr>, _rtcp: Option<SocketAddr>) {
        self.state.lock().unwrap().remotes.push((leg, rtp));
    }
    fn idle(&self) -> Duration {
        self.state.lock().unwrap().idle
    }
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        self.state.lock().unwrap().open -= 1;
    }
}
