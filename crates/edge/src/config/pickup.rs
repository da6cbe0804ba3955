//! Call pickup's settings: the tenant's pickup groups, who directed pickup may reach, and the
//! feature codes that ask for it. They must be the same at every site (the edge that rings a
//! call decides whether to record it for pickup; the picker's edge decides what its picker may
//! take).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{ConfigError, Extension, FeatureCodes};

/// `[[edge.tenant.pickup_groups]]`: whoever is in a group may pick up a call ringing any member.
/// An extension may be in several groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickupGroup {
    pub name: String,
    pub members: Vec<String>,
}

/// Whom directed pickup (`*8<ext>`) may take a call from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectedPickup {
    /// Members of a pickup group the picker is in.
    #[default]
    Group,
    /// Any extension of the tenant.
    Anyone,
}

pub(super) fn default_pickup_code() -> String {
    "*8".into()
}

pub(super) fn default_directed_codes() -> Vec<String> {
    vec!["*8".into(), "**".into()]
}

/// What a dialled number asks of pickup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupDial<'a> {
    Group,
    Directed(&'a str),
}

impl FeatureCodes {
    /// Whether `dialled` is a pickup code: alone (group pickup), or before an extension's
    /// digits (directed).
    pub fn pickup_dialled<'a>(&self, dialled: &'a str) -> Option<PickupDial<'a>> {
        if dialled == self.pickup {
            return Some(PickupDial::Group);
        }
        self.pickup_prefixes.iter().find_map(|p| {
            let ext = dialled.strip_prefix(p.as_str())?;
            (!ext.is_empty() && ext.bytes().all(|c| c.is_ascii_digit()))
                .then_some(PickupDial::Directed(ext))
        })
    }
}

/// The groups, checked: names given and distinct, members known extensions; the codes start
/// with `*` or `#` (extensions and slots are digits only, so no code can shadow one).
pub(super) fn validate(
    groups: &[PickupGroup],
    codes: &FeatureCodes,
    extensions: &BTreeMap<String, Extension>,
) -> Result<(), ConfigError> {
    let bad = |what: String| Err(ConfigError::Pickup(what));
    let mut names = BTreeSet::new();
    let mut all = BTreeSet::new();
    for g in groups {
        if !orbit_state::is_group_name(&g.name) {
            return bad(format!(
                "group {:?}: a name of 1 to 64 letters, digits, '-', '_' or '.'",
                g.name
            ));
        }
        if !names.insert(g.name.as_str()) {
            return bad(format!("group {:?} is named twice", g.name));
        }
        if g.members.is_empty() {
            return bad(format!("group {:?} has no members", g.name));
        }
        for m in &g.members {
            if !extensions.contains_key(m) {
                return bad(format!("group {:?}: no extension {m}", g.name));
            }
            all.insert(m.as_str());
        }
    }
    if all.len() > orbit_state::MAX_PICKUP_EXTS {
        return bad(format!(
            "{} extensions in pickup groups: at most {}",
            all.len(),
            orbit_state::MAX_PICKUP_EXTS
        ));
    }
    for code in std::iter::once(&codes.pickup).chain(&codes.pickup_prefixes) {
        // A code starting with a digit could take the place of extensions and slots (a prefix
        // `9` would make every 9xxx a directed pickup).
        if !code.starts_with(['*', '#'])
            || !code
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b'*' || c == b'#')
        {
            return bad(format!(
                "feature code {code:?}: * or # first, then digits, * and #"
            ));
        }
    }
    Ok(())
}

/// Who may pick up what: the groups by member, from the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PickupRules {
    /// Each extension's fellow members (itself included), over all its groups.
    reach: BTreeMap<String, BTreeSet<String>>,
    pub directed: DirectedPickup,
}

/// The tenant as the orbit state takes it from this config: its extensions and pickup groups
/// (`SeedTenant`; the registry keeps an operator's groups over these once there are any).
pub(super) fn tenant_seed(
    domain: &str,
    groups: &[PickupGroup],
    extensions: &BTreeMap<String, Extension>,
) -> orbit_state::Command {
    orbit_state::Command::SeedTenant {
        tenant: domain.to_string(),
        extensions: extensions.keys().cloned().collect(),
        groups: groups
            .iter()
            .map(|g| orbit_state::PickupGroup {
                tenant: domain.to_string(),
                name: g.name.clone(),
                members: g.members.iter().cloned().collect(),
            })
            .collect(),
    }
}

impl PickupRules {
    /// The rules of `tenant` as the orbit state has its groups now.
    pub fn of(orbit: &orbit_state::Orbit, tenant: &str, directed: DirectedPickup) -> PickupRules {
        let groups: Vec<PickupGroup> = orbit
            .pickup_groups(tenant)
            .map(|g| PickupGroup {
                name: g.name,
                members: g.members.into_iter().collect(),
            })
            .collect();
        PickupRules::new(&groups, directed)
    }

    pub fn new(groups: &[PickupGroup], directed: DirectedPickup) -> PickupRules {
        let mut reach: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for g in groups {
            for m in &g.members {
                reach
                    .entry(m.clone())
                    .or_default()
                    .extend(g.members.iter().cloned());
            }
        }
        PickupRules { reach, directed }
    }

    /// Whether anyone may pick up a call ringing `ext` (only those are recorded in the log).
    pub fn pickable(&self, ext: &str) -> bool {
        self.directed == DirectedPickup::Anyone || self.reach.contains_key(ext)
    }

    /// The extensions whose calls `picker` may take with group pickup; none when it is in no
    /// group.
    pub fn group_of(&self, picker: &str) -> Vec<String> {
        self.reach
            .get(picker)
            .map(|s| s.iter().filter(|e| *e != picker).cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `picker` may take a call ringing `ext` by name (directed pickup, a lamp key).
    pub fn may_take(&self, picker: &str, ext: &str) -> bool {
        self.directed == DirectedPickup::Anyone
            || self.reach.get(picker).is_some_and(|s| s.contains(ext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts(names: &[&str]) -> BTreeMap<String, Extension> {
        names
            .iter()
            .map(|n| {
                let e = Extension {
                    password: Some("pw".into()),
                    ..Default::default()
                };
                (n.to_string(), e)
            })
            .collect()
    }

    fn group(name: &str, members: &[&str]) -> PickupGroup {
        PickupGroup {
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn codes_read_group_and_directed_pickup() {
        let c = FeatureCodes::default();
        assert_eq!(c.pickup_dialled("*8"), Some(PickupDial::Group));
        assert_eq!(
            c.pickup_dialled("*81002"),
            Some(PickupDial::Directed("1002"))
        );
        assert_eq!(
            c.pickup_dialled("**1002"),
            Some(PickupDial::Directed("1002"))
        );
        assert_eq!(c.pickup_dialled("*8x"), None);
        assert_eq!(c.pickup_dialled("**"), None);
        assert_eq!(c.pickup_dialled("1002"), None);
    }

    #[test]
    fn groups_reach_their_members_and_no_one_else() {
        let r = PickupRules::new(
            &[group("a", &["1", "2"]), group("b", &["2", "3"])],
            DirectedPickup::Group,
        );
        assert_eq!(r.group_of("1"), ["2"]);
        assert_eq!(r.group_of("2"), ["1", "3"]);
        assert!(r.group_of("4").is_empty());
        assert!(r.may_take("1", "2") && !r.may_take("1", "3"));
        assert!(r.pickable("3") && !r.pickable("4"));
        let anyone = PickupRules::new(&[], DirectedPickup::Anyone);
        assert!(anyone.may_take("1", "4") && anyone.pickable("4"));
        assert!(anyone.group_of("1").is_empty());
    }

    #[test]
    fn bad_groups_are_refused_with_what_is_wrong() {
        let e = exts(&["1001", "1002"]);
        let codes = FeatureCodes::default();
        let ok = validate(&[group("desks", &["1001", "1002"])], &codes, &e);
        assert!(ok.is_ok());
        for (groups, says) in [
            (vec![group("x", &["1001", "9999"])], "no extension 9999"),
            (
                vec![group("x", &["1001"]), group("x", &["1002"])],
                "named twice",
            ),
            (vec![group(" ", &["1001"])], "a name of 1 to 64"),
            (vec![group("Front Desk", &["1001"])], "a name of 1 to 64"),
            (vec![group("x", &[])], "no members"),
        ] {
            let err = validate(&groups, &codes, &e).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        for (pickup, prefixes) in [
            ("1001", vec![]),
            ("*8", vec!["9".to_string()]),
            ("*8x", vec![]),
        ] {
            let codes = FeatureCodes {
                pickup: pickup.into(),
                pickup_prefixes: prefixes,
                ..Default::default()
            };
            let err = validate(&[], &codes, &e).unwrap_err().to_string();
            assert!(err.contains("* or # first"), "{err}");
        }
    }
}
