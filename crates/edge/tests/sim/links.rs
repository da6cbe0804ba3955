//! The registry links, played as `orbitd`'s: each proposal on its own task (retried while no
//! leader can be reached, "unavailable" when its reply is lost or late), each edge's watch
//! stream from a node (moving to another when its node is down or cut off, resynchronised
//! when too far behind), the outcomes handed back to the edges; and the registry nodes'
//! lives (started, crashed, restarted from disk).

use crate::*;

/// What an edge's link needs of a node: handles that outlive nothing (a crash drops them).
#[derive(Clone)]
pub(crate) struct NodeLink {
    pub(crate) raft: orbit_registry::Raft,
    /// A queue of our own into the node's Raft, as its gRPC service has.
    pub(crate) batch: Batcher,
    pub(crate) state: StateMachineStore,
}

impl NodeLink {
    fn leads(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(id) && m.state.is_leader()
    }
}

/// Shared between the main loop and the proposal tasks.
#[derive(Default)]
pub(crate) struct Links {
    pub(crate) nodes: BTreeMap<u64, NodeLink>,
    /// Per edge, the nodes it cannot reach.
    pub(crate) cut: [BTreeSet<u64>; SITES],
    /// The node partitioned from its peers (it cannot forward to the leader).
    pub(crate) isolated: Option<u64>,
}

impl Links {
    /// The leader, if edge `site` can get a proposal to it: directly, or through a node that
    /// forwards it.
    fn leader_for(&self, site: usize) -> Option<NodeLink> {
        let (&id, leader) = self.nodes.iter().find(|(id, n)| n.leads(**id))?;
        let direct = !self.cut[site].contains(&id);
        let forwarded = Some(id) != self.isolated
            && self
                .nodes
                .keys()
                .any(|n| !self.cut[site].contains(n) && Some(*n) != self.isolated);
        (direct || forwarded).then(|| leader.clone())
    }
}

pub(crate) type Shared = Arc<Mutex<Links>>;

/// One proposal, as `orbitd`'s link makes it (`orbit_registry::Link::propose`): retried
/// while no leader can be reached, "unavailable" when its reply is lost or late.
pub(crate) async fn propose(
    links: Shared,
    site: usize,
    p: Proposal,
    latency: Duration,
    tx: mpsc::UnboundedSender<(usize, u64, u64, Outcome)>,
) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let unavailable = |s: &str| (0, Err(OrbitError::Unavailable(s.into())));
    let outcome = loop {
        let leader = links.lock().unwrap().leader_for(site);
        if let Some(n) = leader {
            tokio::time::sleep(latency).await;
            if links.lock().unwrap().leader_for(site).is_none() {
                // Cut on the way: the request is lost, the client times out.
                tokio::time::sleep(ATTEMPT).await;
                break unavailable("timed out");
            }
            let r = tokio::time::timeout(ATTEMPT, n.batch.write(p.cmd.clone())).await;
            tokio::time::sleep(latency).await;
            let lost = links.lock().unwrap().cut[site].len() == NODES as usize;
            match r {
                _ if lost => break unavailable("reply lost"),
                Ok(Ok((index, o))) => break (index, o.map_err(OrbitError::Rejected)),
                // Nothing appended: try again.
                Ok(Err(WriteError::NotLeader(_))) => {}
                Ok(Err(e)) => break unavailable(&e.to_string()),
                Err(_) => break unavailable("timed out"),
            }
        }
        if started.elapsed() + pause > PROPOSE_BUDGET {
            break unavailable("no leader");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    let (index, outcome) = outcome;
    let _ = tx.send((site, p.token, index, outcome));
}

/// What a node's watch stream sends a watcher at `cursor` next, and the new cursor: as
/// `orbit_registry::node::next_items`, a resync when the events after the cursor are not all
/// kept, else those entries.
pub(crate) fn next_items(sm: &StateMachineStore, cursor: u64) -> (Vec<OrbitFeed>, u64) {
    let d = sm.data.read().unwrap();
    let events = sm.events.lock().unwrap();
    let applied = d.last_applied.map(|l| l.index).unwrap_or(0);
    let floor = sm.complete_after.load(std::sync::atomic::Ordering::Relaxed);
    if cursor < floor {
        let orbit = Box::new(d.orbit.clone());
        return (
            vec![OrbitFeed::Resync {
                index: applied,
                orbit,
            }],
            applied,
        );
    }
    let from = events.partition_point(|a| a.index <= cursor);
    let out = events
        .range(from..)
        .map(|a| OrbitFeed::Applied {
            index: a.index,
            at: a.at,
            cmds: a.done.iter().map(|(c, _)| c.clone()).collect(),
        })
        .collect();
    (out, applied.max(cursor))
}

/// An edge's watch stream.
pub(crate) struct Watch {
    /// The node watched now (none while reconnecting).
    pub(crate) node: Option<u64>,
    /// The next node to try.
    pub(crate) next: u64,
    /// The node's cursor, and the last index delivered (where a new stream resumes).
    pub(crate) cursor: u64,
    pub(crate) after: u64,
    pub(crate) retry_at: Instant,
    pub(crate) pause: Duration,
}

impl Sim {
    pub(crate) fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .flatten()
            .find(|n| n.leads())
            .map(|n| n.id)
    }

    pub(crate) async fn start_node(&mut self, id: u64) {
        // The crashed node's file may still be held for a moment by its last tasks.
        for _ in 0..100 {
            match SimNode::start(id, &self.dir.join(format!("n{id}")), &self.net).await {
                Ok(n) => {
                    let link = NodeLink {
                        raft: n.raft.clone(),
                        batch: n.batch(),
                        state: n.state.clone(),
                    };
                    self.links.lock().unwrap().nodes.insert(id, link);
                    self.nodes.insert(id, Some(n));
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("node {id} does not restart from its disk");
    }

    pub(crate) async fn crash(&mut self, id: u64) {
        // Nodes other than 1 take a snapshot first: restarted from it, their events start
        // there (`complete_after`), and a watcher further behind is resynchronised. Node 1
        // keeps the whole history for the checks.
        if id != 1 {
            if let Some(n) = &self.nodes[&id] {
                let _ = n.raft.trigger().snapshot().await;
                // Let the snapshot be built and written.
                tokio::time::sleep(ms(20)).await;
            }
        }
        self.links.lock().unwrap().nodes.remove(&id);
        if let Some(n) = self.nodes.insert(id, None).flatten() {
            n.crash().await;
        }
    }

    /// The node whose events hold the whole history.
    pub(crate) fn reference(&self) -> &SimNode {
        self.nodes
            .values()
            .flatten()
            .find(|n| n.has_whole_history())
            .expect("a node with the whole history")
    }

    /// Move what the watch streams have for the edges into their feeds.
    pub(crate) fn poll_watches(&mut self, now: Instant) {
        let links = self.links.lock().unwrap();
        for site in 0..SITES {
            let w = &mut self.watches[site];
            let reachable =
                |id: u64| links.nodes.contains_key(&id) && !links.cut[site].contains(&id);
            if let Some(id) = w.node {
                if !reachable(id) {
                    // The stream broke: reconnect, to the next node, after a pause.
                    w.node = None;
                    w.next = id % NODES + 1;
                    w.retry_at = now + w.pause;
                    w.pause = (w.pause * 2).min(Duration::from_secs(1));
                }
            }
            if w.node.is_none() && now >= w.retry_at {
                if reachable(w.next) {
                    debug(|| format!("edge {site} watches node {} from {}", w.next, w.after));
                    w.node = Some(w.next);
                    w.cursor = w.after;
                    w.pause = Duration::from_millis(50);
                } else {
                    w.next = w.next % NODES + 1;
                    w.retry_at = now + w.pause;
                    w.pause = (w.pause * 2).min(Duration::from_secs(1));
                }
            }
            let Some(id) = w.node else { continue };
            let (items, cursor) = next_items(&links.nodes[&id].state, w.cursor);
            w.cursor = cursor;
            for it in items {
                w.after = match &it {
                    OrbitFeed::Applied { index, .. } => *index,
                    OrbitFeed::Resync { index, .. } => {
                        self.resyncs += 1;
                        *index
                    }
                    OrbitFeed::Outcome { .. } => unreachable!(),
                };
                let q = &mut self.feeds[site];
                let at =
                    (now + ms(self.rng.gen_range(1..=4))).max(q.back().map_or(now, |(t, _)| *t));
                q.push_back((at, it));
            }
        }
    }

    /// A proposal's outcome, to the edge that made it (a park's outcome noted on the way).
    pub(crate) fn outcome(
        &mut self,
        site: usize,
        token: u64,
        index: u64,
        outcome: Outcome,
        now: Instant,
    ) {
        if let Some(call) = self.parks_proposed.remove(&(site, token)) {
            match &outcome {
                Ok(_) => self.parks_failed.remove(&call),
                Err(e) => self
                    .parks_failed
                    .insert(call, (site, now_ms(), e.to_string())),
            };
        }
        let feed = OrbitFeed::Outcome {
            token,
            index,
            outcome,
        };
        self.edges[site].on_orbit_feed(now.into_std(), feed);
        self.pump(site, now);
    }
}
