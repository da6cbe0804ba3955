//! The tenant's settings the registry holds, so that every site sees the same: parking lots
//! (`lots`) and pickup groups (`pickup`).

use clap::Subcommand;
use orbit_registry::admin_pb::{
    DeleteLotRequest, DeletePickupGroupRequest, GetLotRequest, GetPickupGroupRequest,
    ListLotsRequest, ListPickupGroupsRequest, Lot, PickupGroup, SetLotRequest,
    SetPickupGroupRequest,
};

use crate::connect::client;
use crate::{bounded, output, request_id, Cli, Failure};

#[derive(Subcommand)]
pub(crate) enum LotsCmd {
    /// Every lot, with the calls parked in it.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// One lot.
    Get {
        #[arg(long)]
        tenant: String,
        park_ext: String,
    },
    /// Create or change a lot (admin role); what is not given stays as the lot has it.
    Set {
        /// The tenant (SIP domain).
        #[arg(long)]
        tenant: String,
        /// The park extension, e.g. 700.
        park_ext: String,
        /// The slots, e.g. 701-720.
        #[arg(long, value_parser = parse_slots)]
        slots: (u32, u32),
        /// How long a call stays parked before it rings back [new lot: 90].
        #[arg(long)]
        parking_secs: Option<u64>,
        /// How long the recall rings the parker [new lot: 20].
        #[arg(long)]
        recall_ring_secs: Option<u64>,
        /// Where an unanswered recall goes next; "" for none (the caller is hung up).
        #[arg(long)]
        fallback: Option<String>,
        /// first_free or next_after_last [new lot: first_free].
        #[arg(long)]
        choice: Option<String>,
    },
    /// Remove a lot (admin role); refused while a call is parked in it.
    Delete {
        #[arg(long)]
        tenant: String,
        park_ext: String,
    },
}

fn parse_slots(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: slots are written first-last, e.g. 701-720"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{v:?} is not a slot number"))
    };
    Ok((n(a)?, n(b)?))
}

#[derive(Subcommand)]
pub(crate) enum PickupCmd {
    /// Every pickup group and its members.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// One pickup group.
    Get {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Create a pickup group or replace its members (admin role); members must be
    /// extensions of the tenant.
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Its members, e.g. 1001,1002.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Remove a pickup group (admin role).
    Delete {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

pub(crate) async fn lots(cli: &Cli, cmd: &LotsCmd) -> Result<(), Failure> {
    let mut c = client(cli)?;
    match cmd {
        LotsCmd::List { tenant } => {
            let req = ListLotsRequest {
                tenant: tenant.clone().unwrap_or_default(),
            };
            let r = bounded(cli, c.list_lots(req)).await?;
            output::lots(&r.lots, cli.json);
        }
        LotsCmd::Get { tenant, park_ext } => {
            let req = GetLotRequest {
                tenant: tenant.clone(),
                park_ext: park_ext.clone(),
            };
            let r = bounded(cli, c.get_lot(req)).await?;
            output::lots(&[r], cli.json);
        }
        LotsCmd::Set {
            tenant,
            park_ext,
            slots,
            parking_secs,
            recall_ring_secs,
            fallback,
            choice,
        } => {
            // A change keeps what it does not name: the lot as it is, else a new lot's defaults.
            let req = GetLotRequest {
                tenant: tenant.clone(),
                park_ext: park_ext.clone(),
            };
            let was = match bounded(cli, c.get_lot(req)).await {
                Ok(l) => Some(l),
                Err(f) if f.code == 5 => None,
                Err(f) => return Err(f),
            };
            let lot = Lot {
                tenant: tenant.clone(),
                park_ext: park_ext.clone(),
                first_slot: slots.0,
                last_slot: slots.1,
                parking_secs: parking_secs
                    .or(was.as_ref().map(|l| l.parking_secs))
                    .unwrap_or(90),
                recall_ring_secs: recall_ring_secs
                    .or(was.as_ref().map(|l| l.recall_ring_secs))
                    .unwrap_or(20),
                fallback: fallback
                    .clone()
                    .or(was.as_ref().map(|l| l.fallback.clone()))
                    .unwrap_or_default(),
                choice: choice
                    .clone()
                    .or(was.as_ref().map(|l| l.choice.clone()))
                    .unwrap_or_default(),
                parked: 0,
            };
            let req = SetLotRequest {
                lot: Some(lot),
                request_id: request_id(cli),
            };
            let r = bounded(cli, c.set_lot(req)).await?;
            output::lots(&[r], cli.json);
        }
        LotsCmd::Delete { tenant, park_ext } => {
            let req = DeleteLotRequest {
                tenant: tenant.clone(),
                park_ext: park_ext.clone(),
                request_id: request_id(cli),
            };
            bounded(cli, c.delete_lot(req)).await?;
            if !cli.json {
                println!("lot {park_ext} of {tenant} deleted");
            }
        }
    }
    Ok(())
}

pub(crate) async fn pickup(cli: &Cli, cmd: &PickupCmd) -> Result<(), Failure> {
    let mut c = client(cli)?;
    match cmd {
        PickupCmd::List { tenant } => {
            let req = ListPickupGroupsRequest {
                tenant: tenant.clone().unwrap_or_default(),
            };
            let r = bounded(cli, c.list_pickup_groups(req)).await?;
            output::pickup_groups(&r.groups, cli.json);
        }
        PickupCmd::Get { tenant, name } => {
            let req = GetPickupGroupRequest {
                tenant: tenant.clone(),
                name: name.clone(),
            };
            let g = bounded(cli, c.get_pickup_group(req)).await?;
            output::pickup_groups(&[g], cli.json);
        }
        PickupCmd::Set {
            tenant,
            name,
            members,
        } => {
            let req = SetPickupGroupRequest {
                group: Some(PickupGroup {
                    tenant: tenant.clone(),
                    name: name.clone(),
                    members: members.clone(),
                }),
                request_id: request_id(cli),
            };
            let g = bounded(cli, c.set_pickup_group(req)).await?;
            output::pickup_groups(&[g], cli.json);
        }
        PickupCmd::Delete { tenant, name } => {
            let req = DeletePickupGroupRequest {
                tenant: tenant.clone(),
                name: name.clone(),
                request_id: request_id(cli),
            };
            bounded(cli, c.delete_pickup_group(req)).await?;
            if !cli.json {
                println!("pickup group {name} of {tenant} deleted");
            }
        }
    }
    Ok(())
}
