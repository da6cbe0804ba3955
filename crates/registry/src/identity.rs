//! Who calls a registry node, from the client certificate (issue 11): its SPIFFE ID, a URI
//! subject alternative name `spiffe://orbit/<role>/<name>`, says the role. Each RPC asks for
//! the role it needs; a proposal from an edge must act for that edge
//! ([`orbit_state::Orbit::may_propose`]).
//!
//! | role | SPIFFE ID | may |
//! |---|---|---|
//! | registry node | `spiffe://orbit/registry/<id>` | Raft RPCs (as that node, while a member), forward proposals |
//! | edge | `spiffe://orbit/edge/<site>` or `.../edge/<site>/<name>` (one of several edges of a site) | propose what `Orbit::proposer` lets it (its own parks, rings, lease, registrations and lamps; claims; seeding lots), watch, status, admin reads |
//! | admin | `spiffe://orbit/admin/<name>` | membership changes, lots (admin API), any proposal, every read |
//! | read | `spiffe://orbit/read/<name>` | watch, status, admin reads |

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
        // An edge is `site` or `site/name`, as its config has to spell them; every other role
        // has one segment.
        if role == "edge" && !orbit_state::names::is_edge_id(name) {
            return None;
        }
        if name.is_empty() || (role != "edge" && name.contains('/')) {
            return None;
        }
        Some(match role {
            // Canonical only: "03" or "+3" are not node 3.
            "registry" => Caller::Node(
                name.parse()
                    .ok()
                    .filter(|id: &NodeId| *id > 0 && id.to_string() == name)?,
            ),
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
pub enum Access {
    /// No TLS: the node listens on loopback only, and whoever can reach it is this host's.
    Open,
    Caller(Caller),
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("a plaintext client on this host"),
            Access::Caller(c) => c.fmt(f),
        }
    }
}

/// Bearer tokens for scripts (`[[registry.tokens]]`), each acting as a reader or an admin
/// named after it; kept as the SHA-256 of the token, so that the config holds no secret.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<(Caller, [u8; 32])>);

impl Tokens {
    /// Token `name` with `role` ("read" or "admin") whose SHA-256 is `sha256` (hex).
    pub fn add(&mut self, name: &str, role: &str, sha256: &str) -> Result<(), String> {
        if !orbit_state::names::is_name(name) {
            return Err(format!("token {name:?}: lowercase letters, digits and '-'"));
        }
        let caller = match role {
            "read" => Caller::Reader(name.into()),
            "admin" => Caller::Admin(name.into()),
            _ => return Err(format!("token {name}: role {role:?} is read or admin")),
        };
        let hash: [u8; 32] = hex::decode(sha256)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("token {name}: sha256 is 64 hex digits"))?;
        if self.0.iter().any(|(c, h)| *h == hash || c == &caller) {
            return Err(format!("token {name}: given twice"));
        }
        self.0.push((caller, hash));
        Ok(())
    }

    /// Who `token` is, if it is one of ours: compared as hashes, each in constant time.
    fn caller(&self, token: &str) -> Option<Caller> {
        use sha2::{Digest, Sha256};
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (c, known) in &self.0 {
            let diff = known
                .iter()
                .zip(h.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y));
            if diff == 0 {
                found = Some(c.clone());
            }
        }
        found
    }
}

impl Access {
    /// The caller of `req`, on a node that serves TLS (`tls`) or not.
    pub fn of<T>(req: &Request<T>, tls: bool) -> Result<Access, Status> {
        Self::of_with(req, tls, &Tokens::default())
    }

    /// As [`Access::of`], a bearer token in `authorization` standing for a certificate when the
    /// caller shows none (scripts; the admin API only).
    pub fn of_with<T>(req: &Request<T>, tls: bool, tokens: &Tokens) -> Result<Access, Status> {
        if !tls {
            return Ok(Access::Open);
        }
        let Some(certs) = req.peer_certs().filter(|c| !c.is_empty()) else {
            let bearer = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            return match bearer {
                None => Err(Status::unauthenticated(
                    "a client certificate signed by the cluster's CA (or a bearer token) is needed",
                )),
                Some(t) => tokens
                    .caller(t.trim())
                    .map(Access::Caller)
                    .ok_or_else(|| Status::unauthenticated("unknown bearer token")),
            };
        };
        let (_, cert) = X509Certificate::from_der(certs[0].as_ref())
            .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
        // SPIFFE: exactly one URI SAN, the identity; a certificate that names more is no one's.
        let uris: Vec<&str> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [one] => Caller::from_spiffe_id(one)
                .map(Access::Caller)
                .ok_or_else(|| {
                    Status::permission_denied(
                    "the client certificate names no Orbit identity (spiffe://orbit/<role>/<name>)",
                )
                }),
            [] => Err(Status::permission_denied(
                "the client certificate names no Orbit identity (spiffe://orbit/<role>/<name>)",
            )),
            _ => Err(Status::permission_denied(
                "the client certificate names more than one URI: a SPIFFE ID must be its only one",
            )),
        }
    }

    fn denied(&self, what: &str) -> Status {
        match self {
            Access::Caller(c) => Status::permission_denied(format!("{c} may not {what}")),
            Access::Open => Status::permission_denied(format!("may not {what}")),
        }
    }

    /// Raft RPCs: registry node `from` only, and only while it is a member (`members`: the
    /// receiver's membership, empty while it has none yet, as a node about to join).
    pub(crate) fn raft(&self, from: NodeId, members: &[NodeId]) -> Result<(), Status> {
        match self {
            Access::Open => Ok(()),
            Access::Caller(Caller::Node(id))
                if *id == from && !members.is_empty() && !members.contains(id) =>
            {
                Err(self.denied("send Raft messages: it is no member of this cluster"))
            }
            Access::Caller(Caller::Node(id)) if *id == from => Ok(()),
            Access::Caller(Caller::Node(_)) => {
                Err(self.denied(&format!("send Raft messages as node {from}")))
            }
            _ => Err(self.denied("send Raft messages")),
        }
    }

    /// A node asking to be made a voter: registry node `id` itself only.
    pub(crate) fn join(&self, id: NodeId) -> Result<(), Status> {
        match self {
            Access::Open => Ok(()),
            Access::Caller(Caller::Node(n)) if *n == id => Ok(()),
            _ => Err(self.denied(&format!("join the cluster as node {id}"))),
        }
    }

    /// Membership changes and other administration.
    pub fn admin(&self) -> Result<(), Status> {
        match self {
            Access::Open | Access::Caller(Caller::Admin(_)) => Ok(()),
            _ => Err(self.denied("change the cluster")),
        }
    }

    /// Reading the state (watch, status): any role.
    pub fn read(&self) -> Result<(), Status> {
        Ok(())
    }

    /// Proposing `cmd` (`forwarded` by a node for `for_edge`, which checked its own caller), as
    /// of `orbit`: the edge the command is to be checked for again as it is applied (None: not
    /// an edge's). An early refusal here is for the caller's sake; the check at apply is the
    /// one that holds, since a park or ring unknown here may be another edge's by then.
    pub(crate) fn propose(
        &self,
        cmd: &Command,
        forwarded: bool,
        for_edge: &str,
        orbit: &Orbit,
    ) -> Result<Option<String>, Status> {
        let edge = (!for_edge.is_empty()).then(|| for_edge.to_string());
        match self {
            Access::Open if forwarded => Ok(edge),
            Access::Open | Access::Caller(Caller::Admin(_)) => Ok(None),
            Access::Caller(Caller::Node(_)) if forwarded => Ok(edge),
            Access::Caller(Caller::Edge(site)) if !forwarded && orbit.may_propose(site, cmd) => {
                Ok(Some(site.clone()))
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
            Caller::Edge("site-a/edge-2".into()),
            Caller::Admin("ops".into()),
            Caller::Reader("grafana".into()),
        ] {
            assert_eq!(Caller::from_spiffe_id(&c.spiffe_id()), Some(c));
        }
        for bad in [
            "spiffe://other/edge/site-a",
            "spiffe://orbit/edge/",
            "spiffe://orbit/edge/a/b/c",
            "spiffe://orbit/edge/Site-A",
            "spiffe://orbit/edge/a;b",
            "spiffe://orbit/edge/a/",
            "spiffe://orbit/edge//b",
            "spiffe://orbit/admin/a/b",
            "spiffe://orbit/registry/0",
            "spiffe://orbit/registry/x",
            "spiffe://orbit/registry/03",
            "spiffe://orbit/registry/+3",
            "spiffe://orbit/root/me",
            "https://orbit/edge/site-a",
        ] {
            assert_eq!(Caller::from_spiffe_id(bad), None, "{bad}");
        }
    }
}
