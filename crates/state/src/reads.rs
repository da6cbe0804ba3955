//! What the orbit state answers without changing: lots, parked calls, deadlines, leases,
//! trunks and registrations, as the edges, the registry's timers and the admin API read them.

use crate::{pick, EdgeLoad, LotConfig, LotKey, Millis, Orbit, ParkId, Parked};

impl Orbit {
    pub fn lot(&self, key: &LotKey) -> Option<&LotConfig> {
        self.lots.get(key).and_then(|l| l.cfg.as_ref())
    }

    pub fn lots(&self) -> impl Iterator<Item = &LotConfig> {
        self.lots.values().filter_map(|l| l.cfg.as_ref())
    }

    /// The lot whose park extension is `ext`.
    pub fn lot_by_ext(&self, tenant: &str, ext: &str) -> Option<&LotConfig> {
        self.lots()
            .find(|c| c.tenant == tenant && c.park_ext == ext)
    }

    /// The lot `slot` belongs to.
    pub fn lot_of(&self, tenant: &str, slot: u32) -> Option<&LotConfig> {
        self.lot_of_slot(tenant, slot).map(|(c, _)| c)
    }

    /// The slot the next park in `key` would take, skipping `skip` (slots promised elsewhere,
    /// e.g. announced to an attended park that has not completed yet).
    pub fn free_slot(&self, key: &LotKey, skip: impl Fn(u32) -> bool) -> Option<u32> {
        let lot = self.lots.get(key)?;
        pick(lot.cfg.as_ref()?, lot, skip)
    }

    /// The call in `slot`, if any.
    pub fn in_slot(&self, tenant: &str, slot: u32) -> Option<&Parked> {
        let (_, lot) = self.lot_of_slot(tenant, slot)?;
        lot.slots.get(&slot).and_then(|id| self.parks.get(id))
    }

    pub fn parked(&self, id: ParkId) -> Option<&Parked> {
        self.parks.get(&id)
    }

    /// Whether park `id` has not been made yet as of this state (a replica behind the log
    /// may be asked about a park the log already holds).
    pub fn is_future(&self, id: ParkId) -> bool {
        id > self.next_park
    }

    /// Every parked call of a lot, by slot.
    pub fn occupied(&self, key: &LotKey) -> impl Iterator<Item = &Parked> {
        self.lots
            .get(key)
            .into_iter()
            .flat_map(|l| l.slots.values())
            .filter_map(|id| self.parks.get(id))
    }

    pub fn all_parked(&self) -> impl Iterator<Item = &Parked> {
        self.parks.values()
    }

    /// The edges where `ext` has a phone registered at `now`.
    pub fn located(&self, tenant: &str, ext: &str, now: Millis) -> Vec<&str> {
        self.locations_of(tenant, ext, now)
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    }

    /// The edges where `ext` of `tenant` has a phone registered at `now`, and until when.
    pub fn locations_of(&self, tenant: &str, ext: &str, now: Millis) -> Vec<(&str, Millis)> {
        self.locations
            .get(&(tenant.to_string(), ext.to_string()))
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(_, u)| **u > now)
            .map(|(e, u)| (e.as_str(), *u))
            .collect()
    }

    /// When each edge's lease ends.
    pub fn leases(&self) -> impl Iterator<Item = (&String, Millis)> {
        self.leases.iter().map(|(e, u)| (e, *u))
    }

    /// Where `edge` takes trunk requests, as its lease says, while that lease lives at `now`.
    pub fn trunk_of(&self, edge: &str, now: Millis) -> Option<std::net::SocketAddr> {
        let live = self.leases.get(edge).is_some_and(|u| *u > now);
        self.trunks.get(edge).copied().filter(|_| live)
    }

    /// What `edge` held at its last lease renewal (nothing known: zeros).
    pub fn load_of(&self, edge: &str) -> EdgeLoad {
        self.loads.get(edge).copied().unwrap_or_default()
    }

    /// The trunk address `edge`'s lease gave, whether or not that lease still lives.
    pub fn given_trunk(&self, edge: &str) -> Option<std::net::SocketAddr> {
        self.trunks.get(edge).copied()
    }

    /// Edges whose lease lives at `now`, with the trunk address they gave with it.
    pub fn trunks(&self, now: Millis) -> impl Iterator<Item = (&String, std::net::SocketAddr)> {
        self.trunks
            .iter()
            .filter(move |(e, _)| self.leases.get(*e).is_some_and(|u| *u > now))
            .map(|(e, a)| (e, *a))
    }

    /// Whether `edge` is draining.
    pub fn is_draining(&self, edge: &str) -> bool {
        self.draining.contains(edge)
    }

    /// The process (incarnation) that holds or last held `edge`'s lease.
    pub fn incarnation_of(&self, edge: &str) -> Option<u64> {
        self.incarnations.get(edge).copied()
    }

    /// Edges whose lease has ended by `now`.
    pub fn lapsed(&self, now: Millis) -> Vec<String> {
        self.leases
            .iter()
            .filter(|(_, u)| **u <= now)
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// The earliest deadline of a call still waiting.
    pub fn next_deadline(&self) -> Option<(Millis, ParkId)> {
        self.deadlines.keys().next().copied()
    }

    /// Waiting calls whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: Millis) -> Vec<ParkId> {
        self.deadlines
            .range(..=(now, ParkId::MAX))
            .map(|((_, id), _)| *id)
            .collect()
    }
}
