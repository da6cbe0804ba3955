//! A node that makes itself a voter (`[registry] join`): a new pod of the registry's
//! StatefulSet, or a node the leader removed while it was away (`pruning.rs`), asks the
//! cluster through the peers it is given until the leader has added and promoted it.
//!
//! ```text
//! start, and every CHECK while no leader is known or this node is not a voter
//!     ─▶ Join{id, advertise} to each peer in turn (a follower answers UNAVAILABLE naming the
//!        leader: asked next) ─▶ the leader: add learner (waits for it to catch up), promote
//! ```
//! The node's own certificate is its right to join as its id (`Access::join`).

use std::time::Duration;

use tracing::{debug, info};

use crate::network::channel;
use crate::pb;
use crate::tls::Tls;
use crate::{NodeId, Raft};

/// How often the node looks whether it still needs to ask.
const CHECK: Duration = Duration::from_secs(5);
/// How long one request may take: the leader waits up to 5 s for a learner to catch up.
const REQUEST: Duration = Duration::from_secs(15);

/// Whether this node should ask: it is no voter in the membership it knows, or it knows no
/// leader (a node removed while it was away still holds the old membership, in which it
/// votes, but nobody answers it). Some(whether it votes in that membership) if so.
fn needs_join(raft: &Raft, id: NodeId) -> Option<bool> {
    let m = raft.metrics().borrow().clone();
    let voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id);
    (!voter || m.current_leader.is_none()).then_some(voter)
}

/// The leader's address in an UNAVAILABLE answer ("... the leader is node 2 at host:port").
fn leader_hint(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("the leader is node ")?;
    let (_, addr) = rest.split_once(" at ")?;
    let addr = addr.trim();
    (!addr.is_empty() && !addr.contains(char::is_whitespace)).then(|| addr.to_string())
}

/// Ask `peer` to make node `id` at `advertise` a voter: Ok once it is one, or the leader's
/// address when `peer` is not the leader.
async fn ask(
    peer: &str,
    id: NodeId,
    advertise: &str,
    tls: Option<&Tls>,
) -> Result<(), (String, Option<String>)> {
    let ch = channel(peer, tls).map_err(|e| (e.to_string(), None))?;
    let mut client = pb::registry_client::RegistryClient::new(ch);
    let mut req = tonic::Request::new(pb::NodeRequest {
        node: Some(pb::Member {
            id,
            addr: advertise.to_string(),
            ..Default::default()
        }),
    });
    req.set_timeout(REQUEST);
    // The header's deadline is the server's; a peer that never answers is ours to give up on.
    match tokio::time::timeout(REQUEST, client.join(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err((s.message().to_string(), leader_hint(s.message()))),
        Err(_) => Err(("no answer".into(), None)),
    }
}

/// Keep this node a voter of the cluster that `peers` (gRPC addresses) belong to, asking as
/// `advertise` (the address its peers reach it at), until `closed`.
pub(crate) async fn join_loop(
    raft: Raft,
    id: NodeId,
    advertise: String,
    peers: Vec<String>,
    tls: Option<Tls>,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let mut said = false;
    loop {
        if let Some(voter) = needs_join(&raft, id) {
            let mut asked: Vec<String> =
                peers.iter().filter(|p| **p != advertise).cloned().collect();
            let mut i = 0;
            while i < asked.len() && i < peers.len() + 3 {
                let peer = asked[i].clone();
                i += 1;
                match ask(&peer, id, &advertise, tls.as_ref()).await {
                    Ok(()) => {
                        // A voter that only lost sight of its leader for a moment says nothing.
                        if voter {
                            debug!(node = id, via = %peer, "a voter still");
                        } else {
                            info!(node = id, via = %peer, "joined the registry as a voter");
                        }
                        said = false;
                        break;
                    }
                    Err((why, hint)) => {
                        debug!(node = id, %peer, %why, "join not taken");
                        if let Some(leader) = hint.filter(|l| *l != advertise && !asked.contains(l))
                        {
                            asked.insert(i, leader);
                        }
                        // Once, not every few seconds: a new cluster waits for its init,
                        // and a cluster may be down a while.
                        if !said && i == asked.len() {
                            info!(node = id, %why, "waiting to join the registry");
                            said = true;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_read_from_a_followers_answer() {
        assert_eq!(
            leader_hint(
                "not the leader; the leader is node 2 at orbit-registry-1.orbit-registry:50051"
            )
            .as_deref(),
            Some("orbit-registry-1.orbit-registry:50051")
        );
        assert_eq!(
            leader_hint("not the leader; the leader is not known yet"),
            None
        );
        assert_eq!(leader_hint("node 3 at a b"), None);
    }
}
