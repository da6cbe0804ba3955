//! Changing who the registry's members are, on the leader: shared by the registry's own
//! service (`orbitd registry add-learner|promote|remove`) and the admin API (`orbitctl
//! cluster add|promote|remove`). Each checks its caller's role before it calls here. One
//! change (or leadership transfer) at a time per node ([`Batcher::change`]).

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tonic::Status;
use tracing::info;

use crate::batch::Batcher;
use crate::{NodeId, Raft};

/// How long adding a learner waits for it to catch up before it answers anyway.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A membership change refused or failed, as a gRPC status: not the leader is UNAVAILABLE
/// naming the leader, so that a client retries there.
pub(crate) fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Status::unavailable(format!(
            "not the leader; the leader is {}",
            match (f.leader_id, f.leader_node) {
                (Some(id), Some(n)) => format!("node {id} at {}", n.addr),
                _ => "not known yet".into(),
            }
        )),
        // Another change under way: try again shortly.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            openraft::error::ChangeMembershipError::InProgress(e),
        )) => Status::unavailable(e.to_string()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}

/// The current membership's voters and learners.
fn members(raft: &Raft) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let m = raft.metrics().borrow().clone();
    let cfg = m.membership_config.membership();
    (cfg.voter_ids().collect(), cfg.learner_ids().collect())
}

/// Add node `id` at `addr` as a learner (it receives the log, and does not vote), waiting
/// until it has caught up.
pub(crate) async fn add_learner(
    raft: &Raft,
    batch: &Batcher,
    id: NodeId,
    addr: String,
) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument("id: node ids start at 1"));
    }
    // host:port, the host an address or a name (certificates may name nodes by DNS).
    let good = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !good || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::invalid_argument(format!(
            "addr: {addr:?} is not host:port"
        )));
    }
    let _one = batch.change()?;
    let (voters, learners) = members(raft);
    if voters.contains(&id) || learners.contains(&id) {
        return Err(Status::already_exists(format!(
            "node {id} is a member already"
        )));
    }
    info!(node = id, %addr, "adding learner");
    // Answered once it has caught up, or after a while anyway: it is a member then, and the
    // cluster's status shows how far behind it still is.
    match tokio::time::timeout(
        CATCH_UP_WAIT,
        raft.add_learner(id, BasicNode::new(addr), true),
    )
    .await
    {
        Ok(r) => {
            r.map_err(write_error)?;
        }
        Err(_) => info!(node = id, "learner added; still catching up"),
    }
    Ok(())
}

/// Node `id` at `addr` asks to be a voter: added as a learner unless it is one, then
/// promoted. A voter already is left as it is.
pub(crate) async fn join(
    raft: &Raft,
    batch: &Batcher,
    id: NodeId,
    addr: String,
) -> Result<(), Status> {
    let (voters, learners) = members(raft);
    if voters.contains(&id) {
        return Ok(());
    }
    // Elsewhere than on the leader, either step answers UNAVAILABLE naming the leader.
    if !learners.contains(&id) {
        add_learner(raft, batch, id, addr).await?;
    }
    // Only the leader knows how far a learner is: elsewhere, promote answers at once with
    // UNAVAILABLE naming the leader, which the joiner asks next.
    let leading = {
        let m = raft.metrics().borrow().clone();
        m.current_leader == Some(m.id)
    };
    if !leading {
        return promote(raft, batch, id).await;
    }
    // A voter that cannot be reached, or lags, weakens every quorum at once: promoted only
    // once it has the log up to its own admission (waited for a while; then it asks again).
    let caught_up = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
        let admitted = m.membership_config.log_id().map_or(0, |l| l.index);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map_or(0, |l| l.index);
        (matched, admitted)
    };
    let _ = raft
        .wait(Some(CATCH_UP_WAIT))
        .metrics(
            |m| {
                let (matched, admitted) = caught_up(m);
                matched >= admitted
            },
            "learner caught up",
        )
        .await;
    let (matched, admitted) = caught_up(&raft.metrics().borrow());
    if matched < admitted {
        return Err(Status::unavailable(format!(
            "node {id} is a learner still catching up (at {matched} of {admitted}): ask again"
        )));
    }
    promote(raft, batch, id).await
}

/// Make learner `id` a voter.
pub(crate) async fn promote(raft: &Raft, batch: &Batcher, id: NodeId) -> Result<(), Status> {
    let _one = batch.change()?;
    let (voters, learners) = members(raft);
    if voters.contains(&id) {
        return Err(Status::already_exists(format!("node {id} votes already")));
    }
    if !learners.contains(&id) {
        return Err(Status::not_found(format!(
            "node {id} is not a learner (add it first)"
        )));
    }
    info!(node = id, "promoting to voter");
    let change = ChangeMembers::AddVoterIds([id].into_iter().collect());
    raft.change_membership(change, false)
        .await
        .map_err(write_error)?;
    Ok(())
}

/// Remove node `id` (a voter first loses its vote, then leaves), unless fewer than
/// `min_voters` would be left (an operator: 1; the leader pruning: three). Checked under the
/// change lock, against the membership's newest voters.
pub(crate) async fn remove(
    raft: &Raft,
    batch: &Batcher,
    id: NodeId,
    min_voters: usize,
) -> Result<(), Status> {
    let _one = batch.change()?;
    let (voters, learners) = members(raft);
    if !voters.contains(&id) && !learners.contains(&id) {
        return Err(Status::not_found(format!("node {id} is not a member")));
    }
    let newest = {
        let m = raft.metrics().borrow().clone();
        let joint = m.membership_config.membership().get_joint_config().clone();
        joint.last().cloned().unwrap_or_default()
    };
    if newest.contains(&id) && newest.len() <= min_voters.max(1) {
        return Err(Status::failed_precondition(format!(
            "node {id} is one of the last {} voters",
            newest.len()
        )));
    }
    info!(node = id, "removing node");
    let ids: BTreeSet<NodeId> = [id].into_iter().collect();
    if voters.contains(&id) {
        raft.change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
            .await
            .map_err(write_error)?;
    }
    raft.change_membership(ChangeMembers::RemoveNodes(ids), false)
        .await
        .map_err(write_error)?;
    Ok(())
}
