//! Client side of the membership RPCs, for `orbitd registry ...`: ask any node, and send
//! changes to the leader it names.

use std::time::Duration;

use tonic::transport::Channel;

use crate::network::channel;
use crate::pb;
use crate::pb::registry_client::RegistryClient;
use crate::tls::Tls;
use crate::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("registry node at {addr}: {msg}")]
    Call { addr: String, msg: String },
    #[error("no leader known at {0} (is the cluster initialised?)")]
    NoLeader(String),
}

async fn client(addr: &str, tls: Option<&Tls>) -> Result<RegistryClient<Channel>, AdminError> {
    let ch = channel(addr, tls).map_err(|e| AdminError::Call {
        addr: addr.into(),
        msg: e.to_string(),
    })?;
    Ok(RegistryClient::new(ch))
}

fn call_err(addr: &str) -> impl Fn(tonic::Status) -> AdminError + '_ {
    move |s| AdminError::Call {
        addr: addr.into(),
        msg: format!("{}: {}", s.code(), s.message()),
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(
    addr: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, AdminError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r.map(|r| r.into_inner()).map_err(call_err(addr)),
        Err(_) => Err(AdminError::Call {
            addr: addr.into(),
            msg: "timed out".into(),
        }),
    }
}

pub async fn status(addr: &str, tls: Option<&Tls>) -> Result<pb::MembershipReply, AdminError> {
    let mut c = client(addr, tls).await?;
    bounded(addr, c.status(pb::StatusRequest {})).await
}

pub async fn initialize(
    addr: &str,
    tls: Option<&Tls>,
    members: Vec<(NodeId, String)>,
) -> Result<pb::MembershipReply, AdminError> {
    let mut c = client(addr, tls).await?;
    let members = members
        .into_iter()
        .map(|(id, addr)| pb::Member {
            id,
            addr,
            admin_addr: String::new(),
        })
        .collect();
    bounded(addr, c.initialize(pb::InitializeRequest { members })).await
}

/// Where a member serves operators: its admin listener if it has one of its own (the peer
/// listener then takes nodes only), else its peer address.
pub fn operator_addr<'a>(addr: &'a str, admin_addr: &'a str) -> &'a str {
    if admin_addr.is_empty() {
        addr
    } else {
        admin_addr
    }
}

/// The leader's operator address, as `addr` knows it.
async fn leader_addr(addr: &str, tls: Option<&Tls>) -> Result<String, AdminError> {
    let s = status(addr, tls).await?;
    s.voters
        .iter()
        .chain(s.learners.iter())
        .find(|m| m.id == s.leader && s.leader != 0)
        .map(|m| operator_addr(&m.addr, &m.admin_addr).to_string())
        .ok_or_else(|| AdminError::NoLeader(addr.into()))
}

#[derive(Clone, Copy)]
pub enum Change {
    AddLearner,
    Promote,
    Remove,
}

pub async fn change(
    addr: &str,
    tls: Option<&Tls>,
    change: Change,
    id: NodeId,
    node_addr: String,
) -> Result<pb::MembershipReply, AdminError> {
    let leader = leader_addr(addr, tls).await?;
    let mut c = client(&leader, tls).await?;
    let req = pb::NodeRequest {
        node: Some(pb::Member {
            id,
            addr: node_addr,
            admin_addr: String::new(),
        }),
    };
    match change {
        Change::AddLearner => bounded(&leader, c.add_learner(req)).await,
        Change::Promote => bounded(&leader, c.promote(req)).await,
        Change::Remove => bounded(&leader, c.remove(req)).await,
    }
}
