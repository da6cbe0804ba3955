//! The relay as the tests see it: the media commands the core hands out, applied to a record
//! of open sessions, what each leg was told (in the words the assertions use), and the remotes
//! set. It plays the driver's part for silence too: [`RelayLog::set_idle`] pretends no packet
//! has arrived for that long, and [`Net::advance`](super::Net) reports it every second, as the
//! driver does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::media::{Leg, MediaCmd, MediaEvent};

#[derive(Default)]
pub(super) struct RelayLog {
    /// Open sessions: call → its relay ports (legs A and B).
    open: BTreeMap<u64, [u16; 2]>,
    /// Every session's call and ports, in the order they were opened.
    opened: Vec<(u64, [u16; 2])>,
    /// What was played, bridged and vacated, in order ("play A music PCMU 2000ms", ...).
    feeds: Vec<String>,
    remotes: Vec<(Leg, Option<SocketAddr>)>,
    idle: Duration,
}

impl RelayLog {
    pub(super) fn apply(&mut self, cmds: Vec<MediaCmd>) {
        for cmd in cmds {
            match cmd {
                MediaCmd::Open { call, ports } => {
                    assert!(
                        self.open
                            .values()
                            .all(|p| !p.iter().any(|x| ports.contains(x))),
                        "ports {ports:?} of call {call} are already another call's"
                    );
                    self.open.insert(call, ports);
                    self.opened.push((call, ports));
                }
                MediaCmd::Remote { leg, rtp, .. } => self.remotes.push((leg, rtp)),
                MediaCmd::Play {
                    leg,
                    clip,
                    codec,
                    looped,
                    ..
                } => {
                    let what = if looped { "music" } else { "prompt" };
                    let ms = clip.duration().as_millis();
                    self.feeds
                        .push(format!("play {leg:?} {what} {} {ms}ms", codec.name()));
                }
                MediaCmd::Bridge { leg, .. } => self.feeds.push(format!("bridge {leg:?}")),
                MediaCmd::Vacate { leg, .. } => self.feeds.push(format!("vacate {leg:?}")),
                MediaCmd::Close { call } => {
                    assert!(
                        self.open.remove(&call).is_some(),
                        "call {call} closed twice"
                    );
                }
                MediaCmd::Dtmf { .. } | MediaCmd::Unbind { .. } => {}
            }
        }
    }

    /// What the driver would report now: every open call silent for the idle time set.
    pub(super) fn silence(&self) -> Vec<MediaEvent> {
        if self.idle < Duration::from_secs(1) {
            return vec![];
        }
        self.open
            .keys()
            .map(|&call| MediaEvent::Silent {
                call,
                idle: self.idle,
            })
            .collect()
    }

    /// The relay could not open `call`'s ports (as the driver reports it: the session is gone).
    pub(super) fn fail(&mut self, call: u64) -> MediaEvent {
        self.open.remove(&call);
        MediaEvent::Failed {
            call,
            error: "address in use".into(),
        }
    }

    /// Pretend no packet has arrived for this long, on every session.
    pub(super) fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    pub(super) fn open_sessions(&self) -> usize {
        self.open.len()
    }

    /// The call of the `nth` session opened (from 0).
    pub(super) fn call(&self, nth: usize) -> u64 {
        self.opened[nth].0
    }

    /// Sessions opened so far.
    pub(super) fn opened(&self) -> usize {
        self.opened.len()
    }

    /// The relay port leg `leg` of the `nth` session opened (from 0) was given.
    pub(super) fn port(&self, nth: usize, leg: Leg) -> u16 {
        self.opened[nth].1[leg as usize]
    }

    /// Every play/bridge/vacate so far, in order; taken.
    pub(super) fn take_feeds(&mut self) -> Vec<String> {
        std::mem::take(&mut self.feeds)
    }

    /// Every remote set so far, in order.
    pub(super) fn remotes(&self) -> Vec<(Leg, Option<SocketAddr>)> {
        self.remotes.clone()
    }
}
