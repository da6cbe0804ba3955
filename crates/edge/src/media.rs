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
}
