//! Pickup groups as the admin API speaks them: taken in field by field, INVALID_ARGUMENT
//! naming the one at fault (the members are checked against the tenant's extensions as the
//! command is applied, since only the log knows them for sure).

use orbit_state::PickupGroup;
use tonic::Status;

use crate::admin_pb as pb;

pub(crate) fn group_out(g: PickupGroup) -> pb::PickupGroup {
    pb::PickupGroup {
        tenant: g.tenant,
        name: g.name,
        members: g.members.into_iter().collect(),
    }
}

/// A group from the API: each field checked on its own.
pub(crate) fn group_in(g: Option<pb::PickupGroup>) -> Result<PickupGroup, Status> {
    let g = g.ok_or_else(|| Status::invalid_argument("group: missing"))?;
    let bad = |field: &str, why: String| Status::invalid_argument(format!("group.{field}: {why}"));
    if g.tenant.is_empty() || g.tenant.len() > 253 {
        return Err(bad("tenant", "a SIP domain is needed".into()));
    }
    if !orbit_state::is_group_name(&g.name) {
        return Err(bad(
            "name",
            format!("{:?}: 1 to 64 letters, digits, '-', '_' or '.'", g.name),
        ));
    }
    if g.members.is_empty() {
        return Err(bad("members", "a group needs at least one".into()));
    }
    if g.members.len() > orbit_state::MAX_PICKUP_EXTS {
        return Err(bad(
            "members",
            format!("at most {}", orbit_state::MAX_PICKUP_EXTS),
        ));
    }
    if let Some(m) = g.members.iter().find(|m| !orbit_state::is_extension(m)) {
        return Err(bad(
            "members",
            format!("{m:?} is not an extension of digits"),
        ));
    }
    Ok(PickupGroup {
        tenant: g.tenant,
        name: g.name,
        members: g.members.into_iter().collect(),
    })
}
