//! How the orbit state is written down (registry snapshots, resyncs): as lists, since JSON
//! maps need string keys; what can be derived (the deadline index, rings per edge) is rebuilt
//! when it is read, not stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Lot, LotKey, Millis, Orbit, ParkId, Parked, Phase, RingId, Ringing};

#[derive(Serialize, Deserialize)]
pub(crate) struct OrbitRepr {
    lots: Vec<(LotKey, Lot)>,
    parks: Vec<Parked>,
    next_park: ParkId,
    #[serde(default)]
    leases: Vec<(String, Millis)>,
    #[serde(default)]
    incarnations: Vec<(String, u64)>,
    #[serde(default)]
    trunks: Vec<(String, std::net::SocketAddr)>,
    #[serde(default)]
    loads: Vec<(String, crate::EdgeLoad)>,
    #[serde(default)]
    node_admins: Vec<(u64, String)>,
    #[serde(default)]
    draining: Vec<String>,
    #[serde(default)]
    locations: Vec<(String, String, String, Millis)>,
    #[serde(default)]
    rings: Vec<Ringing>,
    #[serde(default)]
    next_ring: RingId,
    #[serde(default)]
    watches: Vec<(String, String, String, Millis)>,
    #[serde(default)]
    tenants: crate::groups::Tenants,
}

impl From<Orbit> for OrbitRepr {
    fn from(o: Orbit) -> OrbitRepr {
        OrbitRepr {
            lots: o.lots.into_iter().collect(),
            parks: o.parks.into_values().collect(),
            next_park: o.next_park,
            leases: o.leases.into_iter().collect(),
            incarnations: o.incarnations.into_iter().collect(),
            trunks: o.trunks.into_iter().collect(),
            loads: o.loads.into_iter().collect(),
            node_admins: o.node_admins.into_iter().collect(),
            draining: o.draining.into_iter().collect(),
            locations: flatten(o.locations),
            rings: o.rings.into_values().collect(),
            next_ring: o.next_ring,
            watches: flatten(o.watches),
            tenants: o.tenants,
        }
    }
}

impl From<OrbitRepr> for Orbit {
    fn from(r: OrbitRepr) -> Orbit {
        let deadlines = r
            .parks
            .iter()
            .filter(|p| p.phase == Phase::Waiting)
            .map(|p| ((p.deadline, p.id), ()))
            .collect();
        let watches = nest(r.watches);
        Orbit {
            lots: r.lots.into_iter().collect(),
            parks: r.parks.into_iter().map(|p| (p.id, p)).collect(),
            deadlines,
            next_park: r.next_park,
            leases: r.leases.into_iter().collect(),
            incarnations: r.incarnations.into_iter().collect(),
            trunks: r.trunks.into_iter().collect(),
            loads: r.loads.into_iter().collect(),
            node_admins: r.node_admins.into_iter().collect(),
            draining: r.draining.into_iter().collect(),
            locations: nest(r.locations),
            watches_by_edge: crate::watches::count_by_edge(&watches),
            watches,
            rings_by_edge: r.rings.iter().fold(BTreeMap::new(), |mut m, x| {
                *m.entry(x.call.edge.clone()).or_default() += 1;
                m
            }),
            rings_by_ext: r.rings.iter().fold(BTreeMap::new(), |mut m, x| {
                m.entry((x.tenant.clone(), x.ext.clone()))
                    .or_insert_with(std::collections::BTreeSet::new)
                    .insert(x.id);
                m
            }),
            rings: r.rings.into_iter().map(|x| (x.id, x)).collect(),
            next_ring: r.next_ring,
            tenants: r.tenants.rebuilt(),
        }
    }
}

/// (tenant, extension) → edge → until, as rows.
type ByExtEdge = BTreeMap<(String, String), BTreeMap<String, Millis>>;

fn flatten(m: ByExtEdge) -> Vec<(String, String, String, Millis)> {
    m.into_iter()
        .flat_map(|((t, x), m)| {
            m.into_iter()
                .map(move |(e, u)| (t.clone(), x.clone(), e, u))
        })
        .collect()
}

fn nest(rows: Vec<(String, String, String, Millis)>) -> ByExtEdge {
    rows.into_iter()
        .fold(BTreeMap::new(), |mut m, (t, x, e, u)| {
            m.entry((t, x)).or_default().insert(e, u);
            m
        })
}
