//! The cluster's status as the admin API shows it: leader, term, indexes, members with what
//! each holds (the leader's view), and the edges with their leases, load and holdings.

use std::collections::BTreeMap;

use crate::admin_api::AdminService;
use crate::admin_pb as pb;
use crate::NodeId;

impl AdminService {
    /// The registry as this node sees it.
    pub(crate) fn status(&self) -> pb::ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let cfg = m.membership_config.membership();
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        // On the leader: what each member holds, its own log included.
        let held: Option<BTreeMap<NodeId, u64>> = m.replication.as_ref().map(|r| {
            let mut h: BTreeMap<NodeId, u64> = r
                .iter()
                .map(|(id, l)| (*id, l.map(|l| l.index).unwrap_or(0)))
                .collect();
            h.insert(m.id, last);
            h
        });
        let voters: Vec<NodeId> = cfg.voter_ids().collect();
        let members = {
            let d = self.sm.data.read().unwrap();
            cfg.nodes()
                .map(|(id, n)| {
                    let matched = held.as_ref().map(|h| h.get(id).copied().unwrap_or(0));
                    pb::Member {
                        id: *id,
                        addr: n.addr.clone(),
                        voter: voters.contains(id),
                        matched_index: matched,
                        lag: matched.map(|m| last.saturating_sub(m)),
                        admin_addr: d.orbit.node_admin(*id).unwrap_or_default().to_string(),
                    }
                })
                .collect()
        };
        // Replication metrics may trail what is applied already: never show less than that.
        let commit = match &held {
            Some(h) => majority_index(&voters, h).max(applied),
            None => applied,
        };
        let edges = {
            let d = self.sm.data.read().unwrap();
            let o = &d.orbit;
            let mut edges: BTreeMap<String, pb::Edge> = o
                .leases()
                .map(|(e, until)| {
                    let edge = pb::Edge {
                        name: e.clone(),
                        lease_until_ms: until,
                        draining: o.is_draining(e),
                        trunk: o.given_trunk(e).map(|a| a.to_string()).unwrap_or_default(),
                        calls: o.load_of(e).calls.into(),
                        relay_ports: o.load_of(e).relay_ports.into(),
                        ..Default::default()
                    };
                    (e.clone(), edge)
                })
                .collect();
            for p in o.all_parked() {
                edges.entry(p.call.edge.clone()).or_default().parked_calls += 1;
            }
            for (e, n) in o.rings_per_edge() {
                edges.entry(e.clone()).or_default().rings = n as u64;
            }
            edges
                .into_iter()
                .map(|(name, e)| pb::Edge { name, ..e })
                .collect()
        };
        pb::ClusterStatus {
            node_id: m.id,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: last,
            commit_index: commit,
            applied_index: applied,
            members,
            edges,
        }
    }
}

/// The highest index a majority of `voters` holds, given what each holds.
fn majority_index(voters: &[NodeId], held: &BTreeMap<NodeId, u64>) -> u64 {
    let mut v: Vec<u64> = voters
        .iter()
        .map(|id| held.get(id).copied().unwrap_or(0))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_what_a_majority_of_voters_holds() {
        let held: BTreeMap<NodeId, u64> = [(1, 10), (2, 7), (3, 3), (4, 12)].into();
        assert_eq!(majority_index(&[1, 2, 3], &held), 7);
        assert_eq!(majority_index(&[1, 2, 3, 4, 5], &held), 7, "5 missing: 0");
        assert_eq!(majority_index(&[1], &held), 10);
    }
}
