//! The in-memory network (each link in order, small random latencies), the faults (registry
//! nodes isolated or crashed, edges cut from the registry, their home node or the trunk,
//! trunk claims lost), and the main loop that delivers everything due to the edges and the
//! phones.

use crate::*;

pub(crate) struct Wire {
    /// (delivery time, sequence) → (from, to, bytes).
    pub(crate) queue: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    pub(crate) seq: u64,
    /// Each link delivers in order.
    pub(crate) last: HashMap<(SocketAddr, SocketAddr), Instant>,
}

impl Wire {
    fn send(&mut self, now: Instant, ms: u64, from: SocketAddr, to: SocketAddr, b: Bytes) {
        let at = (now + Duration::from_millis(ms))
            .max(self.last.get(&(from, to)).copied().unwrap_or(now));
        self.last.insert((from, to), at);
        self.seq += 1;
        self.queue.insert((at, self.seq), (from, to, b));
    }
}

impl Sim {
    /// One fault at a time among the nodes, one at a time among the edges.
    pub(crate) async fn faults(&mut self, now: Instant) {
        match self.node_fault {
            Some((until, crashed)) if now >= until => {
                self.net.heal();
                self.links.lock().unwrap().isolated = None;
                if let Some(id) = crashed {
                    self.start_node(id).await;
                }
                self.node_fault = None;
                self.next_node_fault = now + ms(self.rng.gen_range(1_000..=4_000));
            }
            None if now >= self.next_node_fault => {
                self.faults += 1;
                let id = self.rng.gen_range(1..=NODES);
                let until = now + ms(self.rng.gen_range(300..=3_000));
                if self.rng.gen_bool(0.5) {
                    debug(|| format!("fault: node {id} isolated"));
                    self.net.isolate(id);
                    self.links.lock().unwrap().isolated = Some(id);
                    self.node_fault = Some((until, None));
                } else {
                    // Half the crashes take the leader, and the first one always (openraft's
                    // unseeded election jitter must not leave a run without one).
                    let id = match self.leader() {
                        Some(l) if self.leader_kills == 0 || self.rng.gen_bool(0.5) => {
                            self.leader_kills += 1;
                            l
                        }
                        _ => id,
                    };
                    debug(|| format!("fault: node {id} crashed"));
                    self.crash(id).await;
                    self.node_fault = Some((until, Some(id)));
                }
            }
            _ => {}
        }
        match self.edge_fault {
            Some((until, site)) if now >= until => {
                self.links.lock().unwrap().cut[site].clear();
                self.trunk_cut[site] = false;
                self.edge_fault = None;
                self.next_edge_fault = now + ms(self.rng.gen_range(1_000..=4_000));
            }
            None if now >= self.next_edge_fault => {
                self.faults += 1;
                let site = self.rng.gen_range(0..SITES);
                let kind = self.rng.gen_range(0..3);
                self.edge_cuts[kind] += 1;
                let until = match kind {
                    // Cut from the registry: sometimes longer than the lease.
                    0 => {
                        self.links.lock().unwrap().cut[site] = (1..=NODES).collect();
                        self.rng.gen_range(300..=7_000)
                    }
                    // Cut from its home node (the one it watches first).
                    1 => {
                        self.links.lock().unwrap().cut[site].insert(site as u64 + 1);
                        self.rng.gen_range(300..=4_000)
                    }
                    _ => {
                        self.trunk_cut[site] = true;
                        self.rng.gen_range(300..=4_000)
                    }
                };
                self.edge_fault = Some((now + ms(until), site));
                debug(|| format!("fault: {} cut ({kind}) for {until} ms", SITE_NAMES[site]));
            }
            _ => {}
        }
    }

    pub(crate) async fn heal(&mut self) {
        self.net.heal();
        {
            let mut l = self.links.lock().unwrap();
            l.isolated = None;
            for c in l.cut.iter_mut() {
                c.clear();
            }
        }
        self.trunk_cut = [false; SITES];
        self.node_fault = None;
        self.edge_fault = None;
        for id in 1..=NODES {
            if self.nodes[&id].is_none() {
                self.start_node(id).await;
            }
        }
    }

    /// Hand out what edge `site` produced: proposals to their tasks, messages to the wire.
    pub(crate) fn pump(&mut self, site: usize, now: Instant) {
        for p in self.edges[site].take_proposals() {
            if let Command::Park { call, .. } = &p.cmd {
                self.parks_proposed
                    .insert((site, p.token), call.call_id.clone());
            }
            let latency = ms(self.rng.gen_range(1..=4));
            tokio::spawn(propose(
                self.links.clone(),
                site,
                p,
                latency,
                self.outcome_tx.clone(),
            ));
        }
        // Media is not simulated: the phones' audio is their INFO greeting.
        self.edges[site].take_media();
        let out: Vec<_> = self.edges[site].drain().collect();
        for t in out {
            let to = t.flow.addr;
            let peer = (0..SITES).find(|s| edge_addr(*s) == to);
            let lat = match peer {
                Some(p) if self.trunk_cut[site] || self.trunk_cut[p] => continue,
                Some(_) if self.lost_on_trunk(&t.bytes) => continue,
                Some(_) => self.rng.gen_range(2..=15),
                None => self.rng.gen_range(1..=5),
            };
            self.wire.send(now, lat, edge_addr(site), to, t.bytes);
        }
    }

    /// Whether a message an edge sends over the trunk is lost: all of a call's messages are
    /// when it fetches a claimed call and the dice say so (a sixth of them, while the traffic
    /// lasts). The call is then never fetched: its holding edge must give it its slot back.
    pub(crate) fn lost_on_trunk(&mut self, b: &Bytes) -> bool {
        let Ok(m) = orbit_sip::parse(b.clone(), &Limits::default()) else {
            return false;
        };
        let cid = m.call_id();
        if self.lost_claims.contains(cid) {
            return true;
        }
        let claim = m.is_request()
            && matches!(m.method(), Method::Invite)
            && m.to_tag().is_none()
            && m.header_other("X-Orbit-Claim").is_some();
        if !claim || !self.trunk_claims.insert(cid.to_string()) {
            return false;
        }
        if !self.traffic || !self.rng.gen_ratio(1, 6) {
            return false;
        }
        debug(|| format!("trunk claim {cid} lost"));
        self.lost_claims.insert(cid.to_string());
        true
    }

    /// Let phone `i` act (`f`) with what it acts on besides itself, then send what it sent.
    fn with_phone(
        &mut self,
        i: usize,
        now: Instant,
        wall: Millis,
        f: impl FnOnce(&mut Phone, &mut Cx),
    ) {
        let mut out = vec![];
        let mut cx = Cx {
            now,
            ms: wall,
            rng: &mut self.rng,
            out: &mut out,
            obs: &mut self.obs,
            traffic: self.traffic,
        };
        f(&mut self.phones[i], &mut cx);
        self.phone_out(now, out);
    }

    pub(crate) fn phone_out(&mut self, now: Instant, out: Vec<(SocketAddr, SocketAddr, Bytes)>) {
        for (from, to, b) in out {
            let lat = self.rng.gen_range(1..=5);
            self.wire.send(now, lat, from, to, b);
        }
    }

    /// Run everything due now, then wait for the next thing to do.
    pub(crate) async fn step(&mut self) {
        let now = Instant::now();
        let std_now = now.into_std();
        let wall = now_ms();
        self.poll_watches(now);
        for site in 0..SITES {
            while self.feeds[site].front().is_some_and(|(t, _)| *t <= now) {
                let (_, f) = self.feeds[site].pop_front().unwrap();
                self.edges[site].on_orbit_feed(std_now, f);
            }
            self.pump(site, now);
        }
        while let Ok((site, token, index, outcome)) = self.outcomes.try_recv() {
            self.outcome(site, token, index, outcome, now);
        }
        while let Some(e) = self.wire.queue.first_entry() {
            if e.key().0 > now {
                break;
            }
            let (from, to, b) = e.remove();
            if let Some(site) = (0..SITES).find(|s| edge_addr(*s) == to) {
                let from_site = (0..SITES).find(|s| edge_addr(*s) == from);
                if from_site.is_some_and(|f| self.trunk_cut[f] || self.trunk_cut[site]) {
                    continue;
                }
                let flow = Flow {
                    proto: Proto::Udp,
                    addr: from,
                    conn: 0,
                };
                self.edges[site].on_message(std_now, flow, b);
                self.pump(site, now);
            } else if let Some(&i) = self.by_addr.get(&to) {
                let m = orbit_sip::parse(b, &Limits::default()).expect("edges send valid SIP");
                self.with_phone(i, now, wall, |p, cx| p.on_message(cx, m));
            }
        }
        for site in 0..SITES {
            if self.edges[site]
                .next_timeout()
                .is_some_and(|t| t <= std_now)
            {
                self.edges[site].on_timeout(std_now);
                self.pump(site, now);
            }
        }
        for i in 0..self.phones.len() {
            loop {
                let p = &mut self.phones[i];
                let Some(k) = (0..p.timers.len()).find(|k| p.timers[*k].0 <= now) else {
                    break;
                };
                let (_, act) = p.timers.remove(k);
                self.with_phone(i, now, wall, |p, cx| p.on_timer(cx, act));
            }
        }
        // Sleep until the next thing due, an outcome, or the next look at the watches.
        let mut next = now + POLL;
        if let Some(((t, _), _)) = self.wire.queue.first_key_value() {
            next = next.min(*t);
        }
        for site in 0..SITES {
            if let Some((t, _)) = self.feeds[site].front() {
                next = next.min(*t);
            }
            if let Some(t) = self.edges[site].next_timeout() {
                next = next.min(Instant::from_std(t));
            }
        }
        for p in &self.phones {
            for (t, _) in &p.timers {
                next = next.min(*t);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next.max(now)) => {}
            Some((site, token, index, outcome)) = self.outcomes.recv() => {
                self.outcome(site, token, index, outcome, Instant::now());
            }
        }
    }
}
