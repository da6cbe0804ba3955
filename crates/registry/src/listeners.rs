//! Which traffic each listener of a node takes (`[registry] admin_listen`, `edge_listen`). By
//! default one listener takes everything, each method checking its caller's role. With separate
//! listeners an operator can bind each where it belongs (the peer listener on the nodes'
//! network, the edge listener where the edges are, the admin listener on a management
//! network), and each listener lets in only its own kind of caller: the [`Gate`] refuses the
//! rest before any method runs, so that an edge's certificate opens nothing on the peer
//! listener and a node's nothing on the admin one.

use tonic::{Request, Status};

use crate::identity::{Access, Caller, Tokens};

/// The traffic a listener takes: one listener may take several kinds (the node's `listen`
/// takes whatever has no listener of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Raft between nodes and the proposals they forward to the leader: nodes.
    pub peer: bool,
    /// Edges' proposals and their watch of the log: edges.
    pub edge: bool,
    /// The admin API and membership changes: operators (admin and read roles, certificates or
    /// bearer tokens).
    pub admin: bool,
}

impl Traffic {
    pub const ALL: Traffic = Traffic {
        peer: true,
        edge: true,
        admin: true,
    };

    fn admits(self, caller: &Caller) -> bool {
        match caller {
            Caller::Node(_) => self.peer,
            Caller::Edge(_) => self.edge,
            Caller::Admin(_) | Caller::Reader(_) => self.admin,
        }
    }

    fn describe(self) -> String {
        let kinds: Vec<&str> = [
            (self.peer, "peer"),
            (self.edge, "edge"),
            (self.admin, "admin"),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        kinds.join(" and ")
    }
}

/// Lets a listener's own kind of caller in (interceptor on each of its services but health).
#[derive(Clone)]
pub(crate) struct Gate {
    pub traffic: Traffic,
    pub tls: bool,
    pub tokens: std::sync::Arc<Tokens>,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.traffic == Traffic::ALL {
            return Ok(req);
        }
        match Access::of_with(&req, self.tls, &self.tokens)? {
            // Plaintext: the node listens on loopback only (config refuses it elsewhere).
            Access::Open => Ok(req),
            Access::Caller(c) if self.traffic.admits(&c) => Ok(req),
            Access::Caller(c) => Err(Status::permission_denied(format!(
                "{c} may not use this listener: it takes {} traffic",
                self.traffic.describe()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_admits_its_own_callers_only() {
        let node = Caller::Node(1);
        let edge = Caller::Edge("site-a".into());
        let admin = Caller::Admin("ops".into());
        let reader = Caller::Reader("grafana".into());
        for c in [&node, &edge, &admin, &reader] {
            assert!(Traffic::ALL.admits(c));
        }
        let only = |peer, edge, admin| Traffic { peer, edge, admin };
        let peer = only(true, false, false);
        assert!(peer.admits(&node) && !peer.admits(&edge) && !peer.admits(&admin));
        let edges = only(false, true, false);
        assert!(edges.admits(&edge) && !edges.admits(&node) && !edges.admits(&reader));
        let ops = only(false, false, true);
        assert!(ops.admits(&admin) && ops.admits(&reader));
        assert!(!ops.admits(&node) && !ops.admits(&edge));
        let peer_and_edge = only(true, true, false);
        assert!(peer_and_edge.admits(&node) && peer_and_edge.admits(&edge));
        assert!(!peer_and_edge.admits(&admin));
        assert_eq!(peer_and_edge.describe(), "peer and edge");
    }
}
