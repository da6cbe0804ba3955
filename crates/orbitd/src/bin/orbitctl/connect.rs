//! How orbitctl reaches a node: a channel with the TLS flags (or the dev admin certificate),
//! or the CA and a bearer token; and the registry's leader, for membership changes.

use std::time::Duration;

use orbit_registry::admin_pb::admin_client::AdminClient;
use orbit_registry::admin_pb::GetClusterStatusRequest;
use tonic::transport::Channel;

use crate::{bounded, fail, Cli, Failure};

/// A channel that shows the bearer token, if one was given, with every request.
pub type Ch = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub fn client(cli: &Cli) -> Result<AdminClient<Ch>, Failure> {
    client_at(cli, &cli.endpoint)
}

pub fn client_at(cli: &Cli, endpoint: &str) -> Result<AdminClient<Ch>, Failure> {
    Ok(AdminClient::new(channel_at(cli, endpoint)?))
}

/// A channel to --endpoint with the TLS flags (or the dev admin certificate), or the CA and
/// a bearer token.
pub fn channel(cli: &Cli) -> Result<Ch, Failure> {
    channel_at(cli, &cli.endpoint)
}

fn channel_at(cli: &Cli, endpoint: &str) -> Result<Ch, Failure> {
    let tls = match (&cli.token, &cli.ca, &cli.cert) {
        (Some(_), Some(ca), _) => Some(orbit_registry::Tls::ca_only(ca).map_err(|e| fail(5, e))?),
        (Some(_), None, _) => {
            return Err(fail(2, "--token needs --ca, the cluster's CA certificate"))
        }
        (None, Some(_), None) => return Err(fail(2, "--ca needs --cert and --key (or --token)")),
        (None, ..) => {
            orbit_registry::tls::cli_tls(cli.ca.as_deref(), cli.cert.as_deref(), cli.key.as_deref())
                .map_err(|e| fail(5, e))?
        }
    };
    let bearer = match &cli.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| fail(2, "--token: printable characters only"))?,
        ),
        None => None,
    };
    let ch = orbit_registry::network::channel(endpoint, tls.as_ref())
        .map_err(|e| fail(5, format!("{endpoint}: {e}")))?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        ch,
        Bearer(bearer),
    ))
}

/// A client of the registry's leader, found through --endpoint's view of the cluster
/// (membership changes are the leader's to make); while that node knows none (an election, a
/// node that just joined), asked again within --timeout.
pub async fn leader(cli: &Cli) -> Result<AdminClient<Ch>, Failure> {
    let mut c = client(cli)?;
    let until = std::time::Instant::now() + Duration::from_secs(cli.timeout);
    loop {
        let s = bounded(cli, c.get_cluster_status(GetClusterStatusRequest {})).await?;
        if s.leader_id == s.node_id {
            return Ok(c);
        }
        if let Some(l) = s.members.iter().find(|m| m.id == s.leader_id) {
            let at = orbit_registry::admin::operator_addr(&l.addr, &l.admin_addr);
            return client_at(cli, at);
        }
        if std::time::Instant::now() >= until {
            return Err(fail(3, format!("{}: no leader known", cli.endpoint)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
