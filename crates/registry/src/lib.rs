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
pub mod admin_api;
mod admin_groups;
mod admin_lots;
mod admin_parked;
mod admin_status;
pub mod batch;
pub mod client;
pub mod dev_pki;
mod followers;
pub mod identity;
mod joining;
pub mod listeners;
pub mod log_clock;
mod membership;
pub mod network;
pub mod node;
mod node_metrics;
mod proposing;
pub mod pruning;
mod service;
pub mod sim;
pub mod store;
pub mod tls;
mod transfer;
pub mod watch;

/// The generated gRPC code (`proto/orbit/registry/v1/registry.proto`).
pub mod pb {
    tonic::include_proto!("orbit.registry.v1");
}

/// The operator's API (`proto/orbit/admin/v1/admin.proto`).
pub mod admin_pb {
    tonic::include_proto!("orbit.admin.v1");
}

/// Every Orbit service's descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orbit_descriptor.bin"));

use std::io::Cursor;

use orbit_state::{Command, Event, Millis, Rejection};
use serde::{Deserialize, Serialize};

pub use client::{Link, LinkError, WatchUpdate};
pub use identity::Caller;
pub use node::{Node, NodeConfig, NodeError};
pub use proposing::{Committed, ProposeError};
pub use store::{open, LogStore, StateMachineStore, StoreError};
pub use tls::{Tls, TlsError, TlsFiles};

openraft::declare_raft_types!(
    /// The registry's Raft types: orbit commands in, their outcomes out; u64 node ids.
    pub TypeConfig:
        D = Request,
        R = Response,
);

/// One log entry's commands, in order, with the time the leader decided them at (the state
/// machine never reads a clock, so replicas agree). The leader batches the proposals that
/// arrive while earlier entries are in flight into one entry: one fsync, one replication
/// message and one apply for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RequestRepr")]
pub struct Request {
    pub at: Millis,
    pub cmds: Vec<Command>,
    /// Beside `cmds`: the edge each was proposed by, when an edge proposed it. Checked again as
    /// the entry is applied (`Orbit::apply_as`), against the state the command meets there,
    /// not the state the receiving node had: the same on every replica, and no edge acts on a
    /// park or ring that became another's in between. Empty: none was an edge's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<Option<String>>,
    /// Beside `cmds`: each one's request id, when an admin API request gave one. A command
    /// whose id the state machine has seen is not applied again: its first outcome is
    /// answered (`store::Requests`). Empty: none had one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Option<String>>,
    /// Beside `cmds`: each one's trace context (W3C `traceparent`) where its proposal was
    /// traced, so that every node's apply joins that trace. Empty: none was. Nothing decides
    /// by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<Option<String>>,
}

impl Request {
    pub fn one(at: Millis, cmd: Command) -> Request {
        Request {
            at,
            cmds: vec![cmd],
            by: vec![],
            ids: vec![],
            traces: vec![],
        }
    }

    /// The edge that proposed the `i`th command, if an edge did.
    pub fn by(&self, i: usize) -> Option<&str> {
        self.by.get(i).and_then(|b| b.as_deref())
    }
}

/// Entries written before batching held one `cmd`; they still read.
#[derive(Deserialize)]
struct RequestRepr {
    at: Millis,
    #[serde(default)]
    cmd: Option<Command>,
    #[serde(default)]
    cmds: Vec<Command>,
    #[serde(default)]
    by: Vec<Option<String>>,
    #[serde(default)]
    ids: Vec<Option<String>>,
    #[serde(default)]
    traces: Vec<Option<String>>,
}

impl From<RequestRepr> for Request {
    fn from(r: RequestRepr) -> Request {
        let mut cmds: Vec<Command> = r.cmd.into_iter().collect();
        cmds.extend(r.cmds);
        Request {
            at: r.at,
            cmds,
            by: r.by,
            ids: r.ids,
            traces: r.traces,
        }
    }
}

/// What applying an entry produced: for each command, its orbit event or its refusal; nothing
/// for Raft's own entries (blank, membership).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Internal,
    Applied(Vec<Result<Event, Rejection>>),
}

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
