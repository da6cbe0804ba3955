//! Pickup groups and the extensions of each tenant, as every site sees them (issue 11). An
//! edge's config seeds them (`SeedTenant`, on every start), as it seeds lots: a tenant's groups
//! are created from it when the tenant has none yet, and from then on only an operator changes
//! them (through the admin API). The extensions an edge names are added to the tenant's, never
//! taken away: seeds come from any edge, and one edge must not be able to undo what others
//! said (an extension dropped from config stays known; no phone can register as it, so a group
//! naming it harms nobody).
//!
//! Bounded: [`MAX_TENANTS`] tenants, [`MAX_EXTENSIONS`] extensions in all (so the whole state
//! stays small enough to resync an edge in one message) and [`MAX_GROUPS`] groups per tenant,
//! and at most [`crate::MAX_PICKUP_EXTS`] distinct extensions in a tenant's groups (a pickup
//! names them all).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Event, Orbit, Rejection};

/// Tenants whose extensions the state keeps.
pub const MAX_TENANTS: usize = 1_000;
/// Extensions of all tenants together.
pub const MAX_EXTENSIONS: usize = 100_000;
/// Pickup groups of one tenant.
pub const MAX_GROUPS: usize = 1_000;

/// A pickup group: whoever is in it may pick up a call ringing any member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupGroup {
    pub tenant: String,
    pub name: String,
    pub members: BTreeSet<String>,
}

/// What the state keeps of tenants (serialised as it is: its maps have string keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tenants {
    /// Tenant → its extensions: every one any edge's config has named (seeds only add).
    extensions: BTreeMap<String, BTreeSet<String>>,
    /// Tenant → group name → members. A tenant present here (even with no groups left) has
    /// had its groups seeded or set: seeds leave them alone.
    groups: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// How many extensions `extensions` holds in all (derived: not serialised).
    #[serde(skip)]
    count: usize,
}

fn bad(why: String) -> Rejection {
    Rejection::BadGroup(why)
}

/// A group's name: what an operator types; 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn is_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An extension: 1 to 16 digits.
pub fn is_extension(ext: &str) -> bool {
    (1..=16).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_digit())
}

fn check_tenant(tenant: &str) -> Result<(), Rejection> {
    if tenant.is_empty() || tenant.len() > 253 || !tenant.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!("tenant {tenant:?} is not a SIP domain")));
    }
    Ok(())
}

impl Tenants {
    /// After a snapshot is read: what is derived.
    pub(crate) fn rebuilt(mut self) -> Tenants {
        self.count = self.extensions.values().map(BTreeSet::len).sum();
        self
    }

    /// Group `name` of `tenant` with `members`, checked: its name, its members extensions of
    /// the tenant, and the tenant's bounds with it in place of its namesake.
    fn check_group(
        &self,
        tenant: &str,
        name: &str,
        members: &BTreeSet<String>,
        groups: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), Rejection> {
        if !is_group_name(name) {
            return Err(bad(format!(
                "name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if members.is_empty() {
            return Err(bad(format!("group {name} has no members")));
        }
        let Some(known) = self.extensions.get(tenant) else {
            return Err(bad(format!(
                "no edge has said which extensions tenant {tenant} has"
            )));
        };
        if let Some(m) = members.iter().find(|m| !known.contains(*m)) {
            return Err(bad(format!("members: no extension {m} in {tenant}")));
        }
        let others = groups.iter().filter(|(n, _)| n.as_str() != name);
        if others.clone().count() + 1 > MAX_GROUPS {
            return Err(bad(format!("at most {MAX_GROUPS} groups per tenant")));
        }
        let all: BTreeSet<&String> = others.flat_map(|(_, m)| m).chain(members).collect();
        if all.len() > crate::MAX_PICKUP_EXTS {
            return Err(bad(format!(
                "{} extensions in pickup groups: at most {}",
                all.len(),
                crate::MAX_PICKUP_EXTS
            )));
        }
        Ok(())
    }
}

impl Orbit {
    /// `SeedTenant`: the extensions an edge's config names are added to the tenant's; its
    /// config's groups become the tenant's if it has none yet.
    pub(crate) fn seed_tenant(
        &mut self,
        tenant: &str,
        extensions: &[String],
        groups: &[PickupGroup],
    ) -> Result<Event, Rejection> {
        check_tenant(tenant)?;
        let t = &mut self.tenants;
        if !t.extensions.contains_key(tenant) && t.extensions.len() >= MAX_TENANTS {
            return Err(bad(format!("at most {MAX_TENANTS} tenants")));
        }
        if let Some(x) = extensions.iter().find(|x| !is_extension(x)) {
            return Err(bad(format!("extension {x:?}: 1 to 16 digits")));
        }
        let known = t.extensions.get(tenant);
        let new: BTreeSet<&String> = extensions
            .iter()
            .filter(|x| !known.is_some_and(|k| k.contains(*x)))
            .collect();
        if t.count + new.len() > MAX_EXTENSIONS {
            return Err(bad(format!("at most {MAX_EXTENSIONS} extensions in all")));
        }
        let seeding = !t.groups.contains_key(tenant);
        let mut seeded = BTreeMap::new();
        if seeding {
            for g in groups {
                if g.tenant != tenant || seeded.contains_key(&g.name) {
                    return Err(bad(format!(
                        "group {:?} named twice or of another tenant",
                        g.name
                    )));
                }
                seeded.insert(g.name.clone(), g.members.clone());
            }
        }
        // Checked against the extensions as they will be, before anything changes.
        let mut with_new = t.extensions.get(tenant).cloned().unwrap_or_default();
        with_new.extend(new.iter().map(|x| x.to_string()));
        let after = Tenants {
            extensions: BTreeMap::from([(tenant.to_string(), with_new)]),
            ..Default::default()
        };
        for (name, members) in &seeded {
            after.check_group(tenant, name, members, &seeded)?;
        }
        t.count += new.len();
        let mine = t.extensions.entry(tenant.to_string()).or_default();
        mine.extend(new.into_iter().cloned());
        if seeding {
            t.groups.insert(tenant.to_string(), seeded);
        }
        Ok(Event::PickupGroupsSet {
            tenant: tenant.to_string(),
        })
    }

    /// `SetPickupGroup` (an operator's): create or change a group, its members extensions the
    /// tenant has.
    pub(crate) fn set_group(&mut self, g: &PickupGroup) -> Result<Event, Rejection> {
        check_tenant(&g.tenant)?;
        let t = &mut self.tenants;
        let groups = t.groups.get(&g.tenant).cloned().unwrap_or_default();
        t.check_group(&g.tenant, &g.name, &g.members, &groups)?;
        t.groups
            .entry(g.tenant.clone())
            .or_default()
            .insert(g.name.clone(), g.members.clone());
        Ok(Event::PickupGroupsSet {
            tenant: g.tenant.clone(),
        })
    }

    /// `DeletePickupGroup` (an operator's). The tenant's groups stay the operator's: a seed
    /// does not bring it back, even if it was the last.
    pub(crate) fn delete_group(&mut self, tenant: &str, name: &str) -> Result<Event, Rejection> {
        let removed = self
            .tenants
            .groups
            .get_mut(tenant)
            .and_then(|g| g.remove(name));
        if removed.is_none() {
            return Err(Rejection::NoSuchGroup(name.to_string()));
        }
        Ok(Event::PickupGroupsSet {
            tenant: tenant.to_string(),
        })
    }

    /// The pickup groups of `tenant`, by name.
    pub fn pickup_groups(&self, tenant: &str) -> impl Iterator<Item = PickupGroup> + '_ {
        let tenant = tenant.to_string();
        self.tenants
            .groups
            .get(&tenant)
            .into_iter()
            .flatten()
            .map(move |(name, members)| PickupGroup {
                tenant: tenant.clone(),
                name: name.clone(),
                members: members.clone(),
            })
    }

    /// Every tenant whose groups or extensions the state knows.
    pub fn tenants(&self) -> impl Iterator<Item = &String> {
        self.tenants.extensions.keys()
    }

    /// Whether `ext` is an extension of `tenant` (None: no edge has said which it has).
    pub fn has_extension(&self, tenant: &str, ext: &str) -> Option<bool> {
        self.tenants.extensions.get(tenant).map(|x| x.contains(ext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn group(name: &str, members: &[&str]) -> PickupGroup {
        PickupGroup {
            tenant: "t".into(),
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn seed(groups: Vec<PickupGroup>) -> Command {
        Command::SeedTenant {
            tenant: "t".into(),
            extensions: vec!["1001".into(), "1002".into(), "1003".into()],
            groups,
        }
    }

    fn names(o: &Orbit) -> Vec<(String, Vec<String>)> {
        o.pickup_groups("t")
            .map(|g| (g.name, g.members.into_iter().collect()))
            .collect()
    }

    #[test]
    fn config_seeds_groups_where_the_tenant_has_none_and_adds_extensions_only() {
        let mut o = Orbit::new();
        o.apply(0, &seed(vec![group("desks", &["1001", "1002"])]))
            .unwrap();
        assert_eq!(
            names(&o),
            [("desks".into(), vec!["1001".into(), "1002".into()])]
        );
        // Another edge's config (or a changed one): the groups stay as they are.
        o.apply(0, &seed(vec![group("front", &["1003"])])).unwrap();
        assert_eq!(names(&o)[0].0, "desks");
        o.apply(0, &Command::SetPickupGroup(group("back", &["1003"])))
            .unwrap();
        let del = Command::DeletePickupGroup {
            tenant: "t".into(),
            name: "desks".into(),
        };
        o.apply(0, &del).unwrap();
        assert_eq!(
            o.apply(0, &del),
            Err(Rejection::NoSuchGroup("desks".into()))
        );
        let del_back = Command::DeletePickupGroup {
            tenant: "t".into(),
            name: "back".into(),
        };
        o.apply(0, &del_back).unwrap();
        o.apply(0, &seed(vec![group("desks", &["1001"])])).unwrap();
        assert!(names(&o).is_empty(), "deleted groups stay deleted");
        // An edge naming fewer extensions takes none away.
        let fewer = Command::SeedTenant {
            tenant: "t".into(),
            extensions: vec!["1001".into(), "1004".into()],
            groups: vec![],
        };
        o.apply(0, &fewer).unwrap();
        for x in ["1002", "1003", "1004"] {
            assert_eq!(o.has_extension("t", x), Some(true), "{x}");
        }
        assert_eq!(o.tenants.count, 4);
    }

    #[test]
    fn groups_are_checked_against_the_tenants_extensions() {
        let mut o = Orbit::new();
        let set = |g| Command::SetPickupGroup(g);
        let err = o.apply(0, &set(group("a", &["1001"]))).unwrap_err();
        assert!(err.to_string().contains("no edge has said"), "{err}");
        o.apply(0, &seed(vec![])).unwrap();
        for (g, says) in [
            (group("a", &["1001", "9999"]), "members: no extension 9999"),
            (group("a", &[]), "has no members"),
            (group("", &["1001"]), "name \"\""),
            (group("a b", &["1001"]), "name \"a b\""),
        ] {
            let before = o.clone();
            let err = o.apply(0, &set(g)).unwrap_err();
            assert!(err.to_string().contains(says), "{err} lacks {says}");
            assert_eq!(o.tenants, before.tenants, "a refusal changes nothing");
        }
        let bad_seed = Command::SeedTenant {
            tenant: "t".into(),
            extensions: vec!["10x".into()],
            groups: vec![],
        };
        assert!(o.apply(0, &bad_seed).is_err());
        let foreign = Command::SeedTenant {
            tenant: "fresh".into(),
            extensions: vec!["1".into()],
            groups: vec![PickupGroup {
                tenant: "other".into(),
                ..group("a", &["1"])
            }],
        };
        assert!(
            o.apply(0, &foreign).is_err(),
            "a seed acts on its own tenant"
        );
    }

    #[test]
    fn a_stranger_cannot_grow_the_tenants_without_bound() {
        let mut o = Orbit::new();
        let tenant = |name: String, extensions: Vec<String>| Command::SeedTenant {
            tenant: name,
            extensions,
            groups: vec![],
        };
        for n in 0..MAX_TENANTS {
            o.apply(0, &tenant(format!("t{n}"), vec![])).unwrap();
        }
        let err = o.apply(0, &tenant("new".into(), vec![])).unwrap_err();
        assert!(err.to_string().contains("at most 1000 tenants"), "{err}");
        let half: Vec<String> = (0..MAX_EXTENSIONS / 2).map(|n| n.to_string()).collect();
        o.apply(0, &tenant("t0".into(), half.clone())).unwrap();
        o.apply(0, &tenant("t0".into(), half)).unwrap();
        let other: Vec<String> = (0..=MAX_EXTENSIONS / 2).map(|n| n.to_string()).collect();
        let err = o.apply(0, &tenant("t1".into(), other)).unwrap_err();
        assert!(err.to_string().contains("extensions in all"), "{err}");
        assert_eq!(o.has_extension("t1", "0"), Some(false), "refused whole");
    }

    #[test]
    fn groups_per_tenant_are_bounded() {
        let mut o = Orbit::new();
        let groups = (0..=MAX_GROUPS)
            .map(|n| group(&format!("g{n}"), &["1001"]))
            .collect();
        let err = o.apply(0, &seed(groups)).unwrap_err();
        assert!(err.to_string().contains("groups per tenant"), "{err}");
        o.apply(0, &seed(vec![])).unwrap();
        for n in 0..MAX_GROUPS {
            let g = group(&format!("g{n}"), &["1001"]);
            o.apply(0, &Command::SetPickupGroup(g)).unwrap();
        }
        let one_more = Command::SetPickupGroup(group("last", &["1001"]));
        let err = o.apply(0, &one_more).unwrap_err();
        assert!(err.to_string().contains("groups per tenant"), "{err}");
        // Changing one that exists is no new group.
        let changed = Command::SetPickupGroup(group("g0", &["1002"]));
        o.apply(0, &changed).unwrap();
    }

    #[test]
    fn groups_survive_a_snapshot() {
        let mut o = Orbit::new();
        o.apply(0, &seed(vec![group("desks", &["1001", "1002"])]))
            .unwrap();
        o.apply(0, &Command::SetPickupGroup(group("back", &["1003"])))
            .unwrap();
        let back: Orbit = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back.tenants, o.tenants);
        assert_eq!(back.tenants.count, 3, "the count is rebuilt");
    }
}
