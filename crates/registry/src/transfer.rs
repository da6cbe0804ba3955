//! Handing the leadership to another voter (`TransferLeadership`, `orbitctl cluster transfer`):
//! before a node's maintenance, or to put the leader where the load is. openraft 0.9 has no
//! TimeoutNow, so the leader does what it would do:
//!
//! ```text
//! leader: hold new writes, stop heartbeats, stop standing itself ─▶ target caught up?
//!   ─▶ wait out the followers' leader lease ─▶ Campaign RPC to the target ─▶ target elected
//!   ─▶ (guard dropped) heartbeats and elections back on; held writes go on, forwarded to the
//!      new leader
//! ```
//!
//! The writes held are why the followers' leases run out (every append renews them, and a
//! follower whose lease holds refuses to vote). The target stands as soon as the lease is over,
//! before any other follower's election timer (lease plus a random election timeout) fires,
//! with the leader's whole log, and the old leader grants it its vote. If it is not elected in
//! time the old leader takes its heartbeats up again (and usually stays leader): the answer
//! says what happened. Proposals wait for the hand-over, they are not refused: a pause of about
//! the election timeout's upper end.

use std::time::Duration;

use tonic::Status;
use tracing::{info, warn};

use crate::batch::Batcher;
use crate::{pb, NodeId, Raft};

/// How long the target may take to catch up with the leader's log before the transfer is
/// refused.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Heartbeats and elections back on when the transfer ends, however it ends.
struct Resume<'a>(&'a Raft);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let rc = self.0.runtime_config();
        rc.heartbeat(true);
        rc.elect(true);
    }
}

/// The longest the Campaign RPC may take: the target only starts an election.
const CAMPAIGN_RPC: Duration = Duration::from_secs(2);

/// Hand the leadership of `raft` (which must lead) to voter `to`. `tls`: how to reach it.
/// Bounded as a whole, whoever asks and however long they would wait: writes are never held
/// for longer than this takes.
pub(crate) async fn transfer(
    raft: &Raft,
    batch: &Batcher,
    tls: Option<&crate::Tls>,
    to: NodeId,
) -> Result<(), Status> {
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let most = CATCH_UP + CAMPAIGN_RPC + 6 * lease + Duration::from_secs(1);
    tokio::time::timeout(most, hand_over(raft, batch, tls, to))
        .await
        .unwrap_or_else(|_| {
            Err(Status::aborted(format!(
                "leadership transfer to node {to} took longer than {most:?}: given up"
            )))
        })
}

async fn hand_over(
    raft: &Raft,
    batch: &Batcher,
    tls: Option<&crate::Tls>,
    to: NodeId,
) -> Result<(), Status> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return Err(Status::unavailable(format!(
            "not the leader; the leader is {}",
            m.current_leader
                .map_or("not known yet".into(), |l| format!("node {l}"))
        )));
    }
    if to == m.id {
        return Ok(());
    }
    let _one = batch.change()?;
    let membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return Err(Status::unavailable(
            "a membership change is under way: try again shortly",
        ));
    }
    let Some(node) = membership.get_node(&to) else {
        return Err(Status::not_found(format!("node {to} is not a member")));
    };
    if !membership.voter_ids().any(|v| v == to) {
        return Err(Status::failed_precondition(format!(
            "node {to} is a learner: promote it to voter first"
        )));
    }
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let t0 = std::time::Instant::now();
    let _held = batch.hold();
    let rc = raft.runtime_config();
    rc.heartbeat(false);
    rc.elect(false);
    let _resume = Resume(raft);
    info!(to, "leadership transfer: writes held");
    caught_up(raft, to).await?;
    // Every follower's lease was renewed by the last append at the latest: let it run out.
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let mut client = crate::network::channel(&node.addr, tls)
        .map(pb::raft_client::RaftClient::new)
        .map_err(|e| Status::unavailable(format!("node {to} at {}: {e}", node.addr)))?;
    let mut ask = tonic::Request::new(pb::RaftRequest {
        to_node: to,
        from_node: m.id,
        payload: Vec::new(),
    });
    ask.set_timeout(CAMPAIGN_RPC);
    client
        .campaign(ask)
        .await
        .map_err(|s| Status::unavailable(format!("node {to} would not stand: {}", s.message())))?;
    let mut metrics = raft.metrics();
    let elected = tokio::time::timeout(4 * lease + Duration::from_secs(1), async {
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            if leader == Some(to) {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let now = raft.metrics().borrow().current_leader;
    if elected.is_err() || now != Some(to) {
        warn!(to, ?now, "leadership transfer did not complete");
        return Err(Status::aborted(format!(
            "node {to} was not elected in time; the leader is {}",
            now.map_or("not known".into(), |l| format!("node {l}"))
        )));
    }
    info!(
        to,
        writes_held_ms = t0.elapsed().as_millis() as u64,
        "leadership transferred"
    );
    Ok(())
}

/// Wait until `to` holds the leader's whole log (writes are held, so it stands still).
async fn caught_up(raft: &Raft, to: NodeId) -> Result<(), Status> {
    let mut metrics = raft.metrics();
    let wait = tokio::time::timeout(CATCH_UP, async {
        loop {
            let m = metrics.borrow_and_update().clone();
            let last = m.last_log_index.unwrap_or(0);
            let held = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).copied().flatten())
                .map_or(0, |l| l.index);
            if held >= last {
                return Ok(());
            }
            if metrics.changed().await.is_err() {
                return Err(Status::unavailable("this node is stopping"));
            }
        }
    })
    .await;
    wait.unwrap_or_else(|_| {
        Err(Status::failed_precondition(format!(
            "node {to} has not caught up with the leader's log in {CATCH_UP:?}"
        )))
    })
}
