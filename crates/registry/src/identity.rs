//! Who calls a registry node, from the client certificate (issue 11): its SPIFFE ID, a URI
//! subject alternative name `spiffe://orbit/<role>/<name>`, says the role. Each RPC asks for
//! the role it needs; a proposal from an edge must act for that edge
//! ([`orbit_state::Orbit::may_propose`]).
//!
//! | role | SPIFFE ID | may |
//! |---|---|---|
//! | registry node | `spiffe://orbit/registry/<id>` | Raft RPCs (as that node only), forward proposals |
//! | edge | `spiffe://orbit/edge/<site>` | propose for itself, watch, status |
//! | admin | `spiffe://orbit/admin/<name>` | membership changes, any proposal, watch, status |
//! | read | `spiffe://orbit/read/<name>` | watch, status |

use orbit_state::{Command, Orbit};
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::NodeId;

/// The trust domain of Orbit's SPIFFE IDs.
pub const TRUST_DOMAIN: &str = "orbit";

/// Who a caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Node(NodeId),
    Edge(String),
    Admin(String),
    Reader(String),
}

impl Caller {
    /// The SPIFFE ID naming this caller in a certificate.
    pub fn spiffe_id(&self) -> String {
        let (role, name) = match self {
            Caller::Node(id) => ("registry", id.to_string()),
            Caller::Edge(site) => ("edge", site.clone()),
            Caller::Admin(n) => ("admin", n.clone()),
            Caller::Reader(n) => ("read", n.clone()),
        };
        format!("spiffe://{TRUST_DOMAIN}/{role}/{name}")
    }

    /// The caller a SPIFFE ID names, if it is one of ours.
    pub fn from_spiffe_id(uri: &str) -> Option<Caller> {
        let path = uri.strip_prefix(&format!("spiffe://{TRUST_DOMAIN}/"))?;
        let (role, name) = path.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some(match role {
            "registry" => Caller::Node(name.parse().ok().filter(|id| *id > 0)?),
            "edge" => Caller::Edge(name.to_string()),
            "admin" => Caller::Admin(name.to_string()),
            "read" => Caller::Reader(name.to_string()),
            _ => return None,
        })
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

/// What a request may do: everything on a plaintext (loopback-only) node, else what its
/// certificate's role allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// No TLS: the node listens on loopback only, and whoever can reach it is this host's.
    Open,
    Caller(Caller),
}

impl Access {
    /// The caller of `req`, on a node that serves TLS (`tls`) or not.
    pub(crate) fn of<T>(req: &Request<T>, tls: bool) -> Result<Access, Status> {
        if !tls {
            return Ok(Access::Open);
        }
        let certs = req.peer_certs().filter(|c| !c.is_empty()).ok_or_else(|| {
            Status::unauthenticated("a client certificate signed by the cluster's CA is needed")
        })?;
        let (_, cert) = X509Certificate::from_der(certs[0].as_ref())
            .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
        let ids: Vec<Caller> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Caller::from_spiffe_id(u),
                _ => None,
            })
            .collect();
        match ids.as_slice() {
            [one] => Ok(Access::Caller(one.clone())),
            [] => Err(Status::permission_denied(
                "the client certificate names no Orbit identity (spiffe://orbit/<role>/<name>)",
            )),
            _ => Err(Status::permission_denied(
                "the client certificate names more than one Orbit identity",
            )),
        }
    }

    fn denied(&self, what: &str) -> Status {
        match self {
            Access::Caller(c) => Status::permission_denied(format!("{c} may not {what}")),
            Access::Open => Status::permission_denied(format!("may not {what}")),
        }
    }

    /// Raft RPCs: registry node `from` only.
    pub(crate) fn raft(&self, from: NodeId) -> Result<(), Status> {
        match self {
            Access::Open => Ok(()),
            Access::Caller(Caller::Node(id)) if *id == from => Ok(()),
            Access::Caller(Caller::Node(_)) => {
                Err(self.denied(&format!("send Raft messages as node {from}")))
            }
            _ => Err(self.denied("send Raft messages")),
        }
    }

    /// Membership changes and other administration.
    pub(crate) fn admin(&self) -> Result<(), Status> {
        match self {
            Access::Open | Access::Caller(Caller::Admin(_)) => Ok(()),
            _ => Err(self.denied("change the cluster")),
        }
    }

    /// Reading the state (watch, status): any role.
    pub(crate) fn read(&self) -> Result<(), Status> {
        Ok(())
    }

    /// Proposing `cmd` (`forwarded` by a node that checked its own caller), as of `orbit`.
    pub(crate) fn propose(
        &self,
        cmd: &Command,
        forwarded: bool,
        orbit: &Orbit,
    ) -> Result<(), Status> {
        match self {
            Access::Open | Access::Caller(Caller::Admin(_)) => Ok(()),
            Access::Caller(Caller::Node(_)) if forwarded => Ok(()),
            Access::Caller(Caller::Edge(site)) if !forwarded && orbit.may_propose(site, cmd) => {
                Ok(())
            }
            Access::Caller(Caller::Edge(_)) => Err(self.denied(&format!(
                "propose {} (it acts for another edge, or only the registry may)",
                cmd.kind()
            ))),
            _ => Err(self.denied("propose")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_name_a_role_and_one_name() {
        for c in [
            Caller::Node(3),
            Caller::Edge("site-a".into()),
            Caller::Admin("ops".into()),
            Caller::Reader("grafana".into()),
        ] {
            assert_eq!(Caller::from_spiffe_id(&c.spiffe_id()), Some(c));
        }
        for bad in [
            "spiffe://other/edge/site-a",
            "spiffe://orbit/edge/",
            "spiffe://orbit/edge/a/b",
            "spiffe://orbit/registry/0",
            "spiffe://orbit/registry/x",
            "spiffe://orbit/root/me",
            "https://orbit/edge/site-a",
        ] {
            assert_eq!(Caller::from_spiffe_id(bad), None, "{bad}");
        }
    }
}
