//! The leader says when a member stops taking the log, and when it takes it again: openraft
//! logs every failed append at ERROR and retries (a line per heartbeat), so those lines are
//! off, and this is what an operator reads instead. A member is silent when its matched
//! index is short of the leader's last and has not moved for [`SILENT`]: entries flow all the
//! time (leases are renewed every few seconds), and a learner catching up moves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::NodeId;

/// How long a member may stay behind before the leader says it does not answer.
pub const SILENT: Duration = Duration::from_secs(5);

/// What the leader has to say of its members at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// Behind for `for_` (at least [`SILENT`]): said once.
    Silent { node: NodeId, for_: Duration },
    /// Caught up again after it was said to be silent.
    Back { node: NodeId },
}

/// Since when each member has been behind without moving (and where it stood), and which
/// ones were said to be silent.
#[derive(Debug, Default)]
pub struct Followers {
    behind: BTreeMap<NodeId, (Instant, Option<u64>)>,
    silent: BTreeMap<NodeId, ()>,
}

impl Followers {
    /// Look at the members at `now`: `leader` whether this node leads, `last` its last log
    /// index, `matched` each member's matched index (`None`: nothing matched yet).
    pub fn look(
        &mut self,
        now: Instant,
        leader: bool,
        last: u64,
        matched: &BTreeMap<NodeId, Option<u64>>,
    ) -> Vec<Said> {
        if !leader {
            // A follower has nothing to say, and counts afresh when it leads again. What it
            // said is kept: a member it called silent, back when it leads again, is said to be
            // back (a member that restarts campaigns, and its old leader often wins again).
            self.behind.clear();
            return vec![];
        }
        self.behind.retain(|id, _| matched.contains_key(id));
        self.silent.retain(|id, _| matched.contains_key(id));
        let mut said = vec![];
        for (&node, &m) in matched {
            if m.unwrap_or(0) >= last {
                self.behind.remove(&node);
                if self.silent.remove(&node).is_some() {
                    said.push(Said::Back { node });
                }
                continue;
            }
            let (since, at) = self.behind.entry(node).or_insert((now, m));
            if *at != m {
                // It moved: catching up, not silent.
                (*since, *at) = (now, m);
            }
            let for_ = now.duration_since(*since);
            if for_ >= SILENT && self.silent.insert(node, ()).is_none() {
                said.push(Said::Silent { node, for_ });
            }
        }
        said
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(v: &[(NodeId, u64)]) -> BTreeMap<NodeId, Option<u64>> {
        v.iter().map(|&(n, i)| (n, Some(i))).collect()
    }

    #[test]
    fn a_member_behind_long_enough_is_said_silent_once_and_back_once() {
        let t0 = Instant::now();
        let mut f = Followers::default();
        // Node 3 stops at 10 while the log goes on.
        assert!(f
            .look(t0, true, 10, &matched(&[(2, 10), (3, 10)]))
            .is_empty());
        assert!(f
            .look(
                t0 + Duration::from_secs(1),
                true,
                12,
                &matched(&[(2, 12), (3, 10)])
            )
            .is_empty());
        let at = t0 + Duration::from_secs(6);
        assert_eq!(
            f.look(at, true, 14, &matched(&[(2, 14), (3, 10)])),
            vec![Said::Silent {
                node: 3,
                for_: Duration::from_secs(5)
            }]
        );
        // Said once, not at every look.
        assert!(f
            .look(
                at + Duration::from_secs(5),
                true,
                16,
                &matched(&[(2, 16), (3, 10)])
            )
            .is_empty());
        assert!(f
            .look(
                at + Duration::from_millis(5500),
                false,
                16,
                &BTreeMap::new()
            )
            .is_empty());
        assert_eq!(
            f.look(
                at + Duration::from_secs(6),
                true,
                16,
                &matched(&[(2, 16), (3, 16)])
            ),
            vec![Said::Back { node: 3 }]
        );
        assert!(f
            .look(
                at + Duration::from_secs(7),
                true,
                17,
                &matched(&[(2, 17), (3, 17)])
            )
            .is_empty());
    }

    #[test]
    fn a_learner_catching_up_from_far_behind_is_not_silent() {
        let t0 = Instant::now();
        let mut f = Followers::default();
        for s in 0..30 {
            let now = t0 + Duration::from_secs(s);
            assert!(f
                .look(now, true, 10_000, &matched(&[(5, s * 100)]))
                .is_empty());
        }
    }

    #[test]
    fn a_member_that_catches_up_in_time_or_a_node_that_does_not_lead_says_nothing() {
        let t0 = Instant::now();
        let mut f = Followers::default();
        // Behind for a moment after each new entry, as every healthy member is.
        for s in 0..20 {
            let now = t0 + Duration::from_secs(s);
            assert!(f.look(now, true, s + 1, &matched(&[(2, s)])).is_empty());
            assert!(f
                .look(
                    now + Duration::from_millis(5),
                    true,
                    s + 1,
                    &matched(&[(2, s + 1)])
                )
                .is_empty());
        }
        // Not leading: nothing, and no count carried into a later term as leader.
        let mut f = Followers::default();
        assert!(f.look(t0, true, 10, &matched(&[(2, 1)])).is_empty());
        assert!(f
            .look(t0 + Duration::from_secs(9), false, 10, &matched(&[(2, 1)]))
            .is_empty());
        assert!(f
            .look(t0 + Duration::from_secs(10), true, 10, &matched(&[(2, 1)]))
            .is_empty());
        // A member never matched at all is behind too.
        let m: BTreeMap<NodeId, Option<u64>> = [(4, None)].into();
        assert!(f
            .look(t0 + Duration::from_secs(10), true, 10, &m)
            .is_empty());
        assert_eq!(
            f.look(t0 + Duration::from_secs(16), true, 10, &m).len(),
            1,
            "silent"
        );
    }
}
