//! The leader removes members that have been unreachable a long time (`[registry]
//! remove_unreachable_secs`): a pod of a StatefulSet scaled down never comes back, and a voter
//! that never answers again weakens every quorum. Every second the leader asks each member's
//! gRPC health service (any answer is an answer: a node without a leader still answers); one
//! that has answered nothing for the wait is removed, one at a time, a voter only while more
//! than [`MIN_VOTERS`] remain. A node removed while it was away asks to join again once it is
//! back (`joining.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tracing::warn;

use crate::batch::Batcher;
use crate::network::channel;
use crate::tls::Tls;
use crate::{NodeId, Raft};

/// Voters never pruned below this: three tolerate one failure, and losing two of five is what
/// an operator must look at, not an automatic change.
pub const MIN_VOTERS: usize = 3;
/// How long one member's health check may take.
const PROBE: Duration = Duration::from_secs(1);

/// What the leader knows of the other members at one moment.
pub(crate) struct Look<'a> {
    pub leader: bool,
    /// Whether each member other than this node answered its health check.
    pub answered: &'a BTreeMap<NodeId, bool>,
    pub voters: &'a BTreeSet<NodeId>,
    pub learners: &'a BTreeSet<NodeId>,
}

/// When each member last answered, as far as this node has led.
#[derive(Default)]
pub(crate) struct Pruner {
    seen: BTreeMap<NodeId, Instant>,
}

impl Pruner {
    /// Look at the members at `now`: the one to remove, silent for `after`, if any.
    pub(crate) fn look(&mut self, now: Instant, l: &Look, after: Duration) -> Option<NodeId> {
        if !l.leader {
            // A new leader starts its count afresh: it has no history of the others.
            self.seen.clear();
            return None;
        }
        self.seen.retain(|id, _| l.answered.contains_key(id));
        let mut gone = vec![];
        for (id, answered) in l.answered {
            let seen = self.seen.entry(*id).or_insert(now);
            if *answered {
                *seen = now;
            } else if now.duration_since(*seen) >= after {
                gone.push(*id);
            }
        }
        // The highest id first: a StatefulSet scaled down loses its highest ordinals.
        gone.into_iter().rev().find(|id| {
            l.learners.contains(id) || (l.voters.contains(id) && l.voters.len() > MIN_VOTERS)
        })
    }
}

/// Whether the node at `ch` answers a health check within [`PROBE`].
async fn answers(ch: Channel) -> bool {
    let mut client = HealthClient::new(ch);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(PROBE);
    matches!(
        tokio::time::timeout(PROBE, client.check(req)).await,
        Ok(Ok(_))
    )
}

/// On the leader, every second: remove one member silent for `after`.
pub(crate) async fn prune_loop(
    raft: Raft,
    batch: Batcher,
    tls: Option<Tls>,
    after: Duration,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let mut pruner = Pruner::default();
    let mut channels: HashMap<String, Channel> = HashMap::new();
    loop {
        let m = raft.metrics().borrow().clone();
        let leader = m.current_leader == Some(m.id);
        let cfg = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = cfg.voter_ids().collect();
        let learners: BTreeSet<NodeId> = cfg.learner_ids().collect();
        let mut answered = BTreeMap::new();
        if leader {
            let others: Vec<(NodeId, String)> = cfg
                .nodes()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect();
            channels.retain(|a, _| others.iter().any(|(_, o)| o == a));
            let mut probes = tokio::task::JoinSet::new();
            for (id, addr) in others {
                let ch = match channels.get(&addr) {
                    Some(c) => c.clone(),
                    None => match channel(&addr, tls.as_ref()) {
                        Ok(c) => channels.entry(addr).or_insert(c).clone(),
                        Err(_) => {
                            answered.insert(id, false);
                            continue;
                        }
                    },
                };
                probes.spawn(async move { (id, answers(ch).await) });
            }
            while let Some(r) = probes.join_next().await {
                if let Ok((id, ok)) = r {
                    answered.insert(id, ok);
                }
            }
        }
        let look = Look {
            leader,
            answered: &answered,
            voters: &voters,
            learners: &learners,
        };
        if let Some(id) = pruner.look(Instant::now(), &look, after) {
            warn!(
                node = id,
                after_secs = after.as_secs(),
                "removing a registry member that has not answered for that long"
            );
            match crate::membership::remove(&raft, &batch, id, MIN_VOTERS).await {
                Ok(()) => crate::node_metrics::member_removed(),
                Err(e) => warn!(node = id, error = %e.message(), "could not remove it"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    const AFTER: Duration = Duration::from_secs(60);

    /// Node 1 leads `voters` and `learners`; `silent` answer nothing, the others answer.
    fn look(
        p: &mut Pruner,
        at: Instant,
        voters: &[NodeId],
        learners: &[NodeId],
        silent: &[NodeId],
    ) -> Option<NodeId> {
        let (voters, learners) = (ids(voters), ids(learners));
        let answered: BTreeMap<NodeId, bool> = voters
            .union(&learners)
            .filter(|id| **id != 1)
            .map(|id| (*id, !silent.contains(id)))
            .collect();
        p.look(
            at,
            &Look {
                leader: true,
                answered: &answered,
                voters: &voters,
                learners: &learners,
            },
            AFTER,
        )
    }

    #[test]
    fn a_member_silent_for_the_wait_is_removed_highest_first_and_never_below_three_voters() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pruner::default();
        assert_eq!(look(&mut p, t0, &[1, 2, 3, 4, 5], &[], &[]), None);
        // 4 and 5 stop answering at 1 s.
        assert_eq!(
            look(&mut p, t0 + s(1), &[1, 2, 3, 4, 5], &[], &[4, 5]),
            None
        );
        assert_eq!(
            look(&mut p, t0 + s(59), &[1, 2, 3, 4, 5], &[], &[4, 5]),
            None
        );
        assert_eq!(
            look(&mut p, t0 + s(60), &[1, 2, 3, 4, 5], &[], &[4, 5]),
            Some(5)
        );
        // 5 removed; then 4; then nothing, though 3 falls silent too: three voters stay.
        assert_eq!(look(&mut p, t0 + s(61), &[1, 2, 3, 4], &[], &[4]), Some(4));
        assert_eq!(look(&mut p, t0 + s(62), &[1, 2, 3], &[], &[3]), None);
        assert_eq!(look(&mut p, t0 + s(500), &[1, 2, 3], &[], &[3]), None);
    }

    #[test]
    fn an_answer_restarts_the_wait_a_learner_goes_whatever_the_voters_and_a_new_leader_counts_afresh(
    ) {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pruner::default();
        // 4 is silent, answers once at 50 s (a restart), silent again: its wait starts over.
        assert_eq!(look(&mut p, t0, &[1, 2, 3, 4], &[9], &[4, 9]), None);
        assert_eq!(look(&mut p, t0 + s(50), &[1, 2, 3, 4], &[9], &[9]), None);
        assert_eq!(
            look(&mut p, t0 + s(60), &[1, 2, 3, 4], &[9], &[4, 9]),
            Some(9)
        );
        assert_eq!(look(&mut p, t0 + s(109), &[1, 2, 3, 4], &[], &[4]), None);
        // Leadership lost and won again: the count starts over.
        let none = BTreeMap::new();
        let lost = Look {
            leader: false,
            answered: &none,
            voters: &ids(&[1, 2, 3, 4]),
            learners: &ids(&[]),
        };
        assert_eq!(p.look(t0 + s(110), &lost, AFTER), None);
        assert_eq!(look(&mut p, t0 + s(111), &[1, 2, 3, 4], &[], &[4]), None);
        assert_eq!(look(&mut p, t0 + s(170), &[1, 2, 3, 4], &[], &[4]), None);
        assert_eq!(look(&mut p, t0 + s(171), &[1, 2, 3, 4], &[], &[4]), Some(4));
    }
}
