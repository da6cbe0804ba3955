//! Pickup groups and the extensions of each tenant, as every site sees them (issue 11): the
//! edges' config seeds them (`SeedTenant`, on every start, so a changed config reaches the
//! registry), and an operator changes groups through the admin API from then on. Once an
//! operator has changed a tenant's groups, config seeds leave that tenant's groups alone (its
//! extensions still follow the config: the registry learns a member's validity from them).
//!
//! Bounded: [`MAX_TENANTS`] tenants, [`MAX_EXTENSIONS`] extensions and [`MAX_GROUPS`] groups
//! per tenant, and at most [`crate::MAX_PICKUP_EXTS`] distinct extensions in a tenant's groups
//! (a pickup names them all).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Event, Orbit, Rejection};

/// Tenants whose extensions the state keeps.
pub const MAX_TENANTS: usize = 1_000;
/// Extensions of one tenant.
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
    /// Tenant → its extensions, as the last edge config said.
    extensions: BTreeMap<String, BTreeSet<String>>,
    /// Tenant → group name → members.
    groups: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Tenants whose groups an operator changed: seeds leave their groups alone.
    managed: BTreeSet<String>,
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
    /// The groups of `tenant` with `group` in place of its namesake (None: without it),
    /// checked against its extensions and the bounds.
    fn with_group(
        &self,
        tenant: &str,
        name: &str,
        members: Option<&BTreeSet<String>>,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, Rejection> {
        let mut groups = self.groups.get(tenant).cloned().unwrap_or_default();
        match members {
            Some(m) => {
                groups.insert(name.to_string(), m.clone());
            }
            None => {
                groups.remove(name);
            }
        }
        self.check(tenant, &groups)?;
        Ok(groups)
    }

    fn check(
        &self,
        tenant: &str,
        groups: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), Rejection> {
        if groups.len() > MAX_GROUPS {
            return Err(bad(format!("at most {MAX_GROUPS} groups per tenant")));
        }
        let known = self.extensions.get(tenant);
        let mut all = BTreeSet::new();
        for (name, members) in groups {
            if !is_group_name(name) {
                return Err(bad(format!(
                    "name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
                )));
            }
            if members.is_empty() {
                return Err(bad(format!("group {name} has no members")));
            }
            for m in members {
                match known {
                    None => {
                        return Err(bad(format!(
                            "no edge has said which extensions tenant {tenant} has"
                        )))
                    }
                    Some(k) if !k.contains(m) => {
                        return Err(bad(format!("members: no extension {m} in {tenant}")))
                    }
                    Some(_) => {}
                }
                all.insert(m);
            }
        }
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
    /// `SeedTenant`: the extensions and (unless an operator has changed them) the pickup
    /// groups of `tenant`, from an edge's config.
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
        if extensions.len() > MAX_EXTENSIONS {
            return Err(bad(format!(
                "at most {MAX_EXTENSIONS} extensions per tenant"
            )));
        }
        if let Some(x) = extensions.iter().find(|x| !is_extension(x)) {
            return Err(bad(format!("extension {x:?}: 1 to 16 digits")));
        }
        let mut next = t.clone();
        next.extensions
            .insert(tenant.to_string(), extensions.iter().cloned().collect());
        if !next.managed.contains(tenant) {
            let mut seeded = BTreeMap::new();
            for g in groups {
                if g.tenant != tenant || seeded.insert(g.name.clone(), g.members.clone()).is_some()
                {
                    return Err(bad(format!(
                        "group {:?} named twice or of another tenant",
                        g.name
                    )));
                }
            }
            next.check(tenant, &seeded)?;
            next.groups.insert(tenant.to_string(), seeded);
        }
        *t = next;
        Ok(Event::PickupGroupsSet {
            tenant: tenant.to_string(),
        })
    }

    /// `SetPickupGroup` (an operator's): create or change a group, its members extensions the
    /// tenant has.
    pub(crate) fn set_group(&mut self, g: &PickupGroup) -> Result<Event, Rejection> {
        check_tenant(&g.tenant)?;
        let groups = self
            .tenants
            .with_group(&g.tenant, &g.name, Some(&g.members))?;
        self.tenants.groups.insert(g.tenant.clone(), groups);
        self.tenants.managed.insert(g.tenant.clone());
        Ok(Event::PickupGroupsSet {
            tenant: g.tenant.clone(),
        })
    }

    /// `DeletePickupGroup` (an operator's).
    pub(crate) fn delete_group(&mut self, tenant: &str, name: &str) -> Result<Event, Rejection> {
        if !self
            .tenants
            .groups
            .get(tenant)
            .is_some_and(|g| g.contains_key(name))
        {
            return Err(Rejection::NoSuchGroup(name.to_string()));
        }
        let groups = self.tenants.with_group(tenant, name, None)?;
        self.tenants.groups.insert(tenant.to_string(), groups);
        self.tenants.managed.insert(tenant.to_string());
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
    fn config_seeds_groups_until_an_operator_changes_them() {
        let mut o = Orbit::new();
        o.apply(0, &seed(vec![group("desks", &["1001", "1002"])]))
            .unwrap();
        assert_eq!(
            names(&o),
            [("desks".into(), vec!["1001".into(), "1002".into()])]
        );
        // A changed config, before any operator: it replaces the groups.
        o.apply(0, &seed(vec![group("front", &["1003"])])).unwrap();
        assert_eq!(names(&o), [("front".into(), vec!["1003".into()])]);
        o.apply(0, &Command::SetPickupGroup(group("back", &["1001"])))
            .unwrap();
        // From now on the operator's groups stay, whatever the config says.
        o.apply(0, &seed(vec![group("desks", &["1001", "1002"])]))
            .unwrap();
        let now: Vec<String> = names(&o).into_iter().map(|(n, _)| n).collect();
        assert_eq!(now, ["back", "front"]);
        let del = Command::DeletePickupGroup {
            tenant: "t".into(),
            name: "front".into(),
        };
        o.apply(0, &del).unwrap();
        assert_eq!(
            o.apply(0, &del),
            Err(Rejection::NoSuchGroup("front".into()))
        );
        o.apply(0, &seed(vec![group("front", &["1003"])])).unwrap();
        assert_eq!(names(&o).len(), 1, "a deleted group stays deleted");
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
            tenant: "t".into(),
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
        let many = (0..=MAX_EXTENSIONS).map(|n| n.to_string()).collect();
        let err = o.apply(0, &tenant("t0".into(), many)).unwrap_err();
        assert!(err.to_string().contains("extensions per tenant"), "{err}");
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
        assert!(o.apply(0, &one_more).is_err());
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
    }
}
