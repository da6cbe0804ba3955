//! # orbit-media
//!
//! Media anchoring for the edge: [`sdp`] reads and rewrites session descriptions so that both
//! parties send to the relay, and [`relay`] forwards RTP/RTCP between the two endpoints of a
//! call with symmetric latching (only onto sources the signalling expects). No SIP here, and no
//! codecs: payloads pass through untouched.
//!
//! ```text
//! let session = relay::Session::open(&pool)?;            // two endpoints, four ports
//! let offer_for_b = sdp::rewrite(&offer_from_a, session.local(Leg::B))?;
//! session.set_remote(Leg::A, info_a.rtp, info_a.rtcp);   // from A's SDP
//! session.set_source(Leg::A, Some(a_sip_source_ip));     // where A's SIP came from (NAT)
//! drop(session);                                         // call over: endpoints back in the pool
//! ```

pub mod audio;
mod player;
pub mod ports;
pub mod relay;
pub mod sdp;

pub use audio::{Clip, Codec, Prompts};
pub use ports::{PoolTiming, PortPlan};
pub use relay::{DtmfSink, Leg, PortPool, RelayError, Session};
