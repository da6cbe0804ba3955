//! # orbit-registry
//!
//! The orbit state ([`orbit_state::Orbit`]) replicated with Raft: openraft drives the protocol,
//! [`store`] keeps the vote, the log and snapshots in a redb file (each write committed with
//! fsync before openraft is told it is durable), and the state machine applies the log's
//! commands to the orbit state with the time the leader stamped on them, so every replica
//! computes the same slots, deadlines and claim winners.
//!
//! ```text
//! edge ──propose(Command)──▶ leader: stamp `at`, append ──replicate──▶ followers
//!                                     │ committed
//!                                     ▼
//!              every replica: Orbit::apply(at, cmd) → Event (or Rejection)
//! ```

pub mod admin;
pub mod client;
pub mod network;
pub mod node;
pub mod sim;
pub mod store;

/// The generated gRPC code (`proto/orbit/registry/v1/registry.proto`).
pub mod pb {
    tonic::include_proto!("orbit.registry.v1");
}

use std::io::Cursor;

use orbit_state::{Command, Event, Millis, Rejection};
use serde::{Deserialize, Serialize};

pub use client::{Link, LinkError, WatchUpdate};
pub use node::{Committed, Node, NodeConfig, NodeError, ProposeError};
pub use store::{open, LogStore, StateMachineStore, StoreError};

openraft::declare_raft_types!(
    /// The registry's Raft types: orbit commands in, their outcomes out; u64 node ids.
    pub TypeConfig:
        D = Request,
        R = Response,
);

/// One log entry's command, with the time the leader decided it at (the state machine never
/// reads a clock, so replicas agree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub at: Millis,
    pub cmd: Command,
}

/// What applying an entry produced: the orbit event or the refusal; nothing for Raft's own
/// entries (blank, membership).
// Nearly every entry is `Applied`; boxing it would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Internal,
    Applied(Result<Event, Rejection>),
}

impl Response {
    /// The orbit outcome; none for Raft's own entries (never the answer to a proposal).
    pub fn outcome(self) -> Option<Result<Event, Rejection>> {
        match self {
            Response::Applied(o) => Some(o),
            Response::Internal => None,
        }
    }
}

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
