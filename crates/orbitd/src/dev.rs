//! `orbitd dev`: three sites and their registry in one process, on loopback.
//!
//! | site   | SIP UDP+TCP    | TLS  | RTP         | registry gRPC   |
//! |--------|----------------|------|-------------|-----------------|
//! | site-a | 127.0.0.1:5060 | 5061 | 20000–20999 | 127.0.0.1:50051 |
//! | site-b | 127.0.0.1:5070 | 5071 | 21000–21999 | 127.0.0.1:50052 |
//! | site-c | 127.0.0.1:5080 | 5081 | 22000–22999 | 127.0.0.1:50053 |
//!
//! Every site knows the tenant's 30 extensions (1001–1010 are site A's desks, 2001–2010 site
//! B's, 3001–3010 site C's, but a phone may register anywhere), one lot 700 / 701–720, and a
//! trunk to the other two. The registry's disks, the TLS certificate and the trunk secret live
//! under the data directory and survive a restart; so does the control plane's CA (`pki/`),
//! which signs each registry node's, each edge's and an admin's certificate (mutual TLS on
//! every gRPC connection, files 0600).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use orbit_edge::config::{
    AuthConfig, EdgeAdminConfig, EdgeConfig, Extension, LimitsConfig, MediaConfig, PickupGroup,
    RegistryLink, RegistryTls, SipConfig, TenantConfig, TrunkConfig, TrunkPeer,
};
use orbit_registry::dev_pki::DevCa;
use orbit_registry::{Caller, Node, NodeConfig, Tls, TlsFiles};
use tracing::info;

pub const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

fn extensions() -> BTreeMap<String, Extension> {
    let mut extensions = BTreeMap::new();
    for base in [1000, 2000, 3000] {
        for n in base + 1..=base + 10 {
            extensions.insert(
                n.to_string(),
                Extension {
                    password: Some(format!("pw{n}")),
                    display_name: Some(format!("Ext {n}")),
                    ..Default::default()
                },
            );
        }
    }
    extensions
}

/// Site `i`'s edge: SIP at `sip` + 10·i, RTP from `rtp` + 1000·i, its own registry node first.
fn site_config(
    i: usize,
    sip: SocketAddr,
    rtp: u16,
    grpc: &[SocketAddr],
    secret: &str,
    tls: Option<RegistryTls>,
    data_dir: &Path,
) -> EdgeConfig {
    let addr = |j: usize| SocketAddr::new(sip.ip(), sip.port() + 10 * j as u16);
    let listen = addr(i);
    let port_min = rtp + 1000 * i as u16;
    let mut nodes = vec![grpc[i].to_string()];
    nodes.extend((0..3).filter(|j| *j != i).map(|j| grpc[j].to_string()));
    EdgeConfig {
        site: SITES[i].into(),
        name: None,
        // A restarted `orbitd dev` takes its sites' identities over at once.
        state_dir: Some(data_dir.join(format!("edge-{}", SITES[i]))),
        // A developer's Ctrl-C should not wait long for calls to end.
        drain_secs: 5,
        sip: SipConfig {
            listen,
            tls_listen: Some(SocketAddr::new(listen.ip(), listen.port() + 1)),
            tls_cert: None,
            tls_key: None,
            advertise: None,
            t1_ms: 500,
        },
        media: MediaConfig {
            ip: sip.ip(),
            port_min,
            port_max: port_min + 999,
            timeout_secs: 60,
            idle_close_secs: 10,
            parked_timeout_secs: None,
        },
        tenant: TenantConfig {
            domain: "orbit.local".into(),
            realm: None,
            any_host: true,
            extensions: extensions(),
            lots: vec![Default::default()],
            features: Default::default(),
            // Every desk of every site in one group: `*8` and `*8<ext>` work across the sites.
            pickup_groups: vec![PickupGroup {
                name: "desks".into(),
                members: extensions().into_keys().collect(),
            }],
            directed_pickup: Default::default(),
        },
        // MD5 first: many desk phones and SIPp take the first challenge even when they cannot
        // do its algorithm; SHA-256 (RFC 8760) is offered second. Production configs choose.
        auth: AuthConfig {
            algorithms: vec!["MD5".into(), "SHA-256".into()],
            ..AuthConfig::default()
        },
        limits: LimitsConfig::default(),
        registry: Some(RegistryLink {
            nodes,
            lease_secs: 15,
            tls,
        }),
        // Each site's edge admin listener: 10 above the registry nodes' ports.
        admin: Some(EdgeAdminConfig {
            listen: SocketAddr::new(sip.ip(), grpc[0].port() + 10 + i as u16),
        }),
        trunk: Some(TrunkConfig {
            secret: secret.into(),
            peers: (0..3)
                .filter(|j| *j != i)
                .map(|j| TrunkPeer {
                    site: SITES[j].into(),
                    name: None,
                    addr: addr(j),
                })
                .collect(),
            max_skew_secs: 30,
        }),
    }
}

/// The trunk secret, made once and kept in the data dir.
fn trunk_secret(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("trunk-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if s.trim().len() >= 16 {
            return Ok(s.trim().to_string());
        }
    }
    let s = hex::encode(rand::random::<[u8; 16]>());
    std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}

/// Where `orbitd dev` keeps its control-plane certificates, and the admin certificate that
/// `orbitd registry ...` finds there without flags.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// The dev cluster's certificates, made under the data dir (the CA once; the others at each
/// start): each registry node's, each edge's, and an admin's for the command line.
struct DevPki {
    nodes: Vec<TlsFiles>,
    edges: Vec<RegistryTls>,
}

fn dev_pki(data_dir: &Path, host: &str) -> Result<DevPki> {
    let dir = pki_dir(data_dir);
    let ca = DevCa::in_dir(&dir).context("the dev CA")?;
    let hosts = [host, "localhost"];
    let mut nodes = vec![];
    for id in 1..=3u64 {
        let name = format!("registry-{id}");
        nodes.push(ca.write(&dir, &name, &Caller::Node(id), &hosts)?);
    }
    let mut edges = vec![];
    for site in SITES {
        // For this host too: the edge serves its admin listener with it.
        let f = ca.write(&dir, site, &Caller::Edge(site.into()), &hosts)?;
        edges.push(RegistryTls {
            ca: f.ca,
            cert: f.cert,
            key: f.key,
        });
    }
    ca.write(&dir, "admin", &Caller::Admin("dev".into()), &[])?;
    Ok(DevPki { nodes, edges })
}

pub async fn run(data_dir: PathBuf, sip: SocketAddr, grpc: u16, rtp: u16) -> Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let tls = crate::dev_tls(&data_dir)?;
    let secret = trunk_secret(&data_dir)?;
    let pki = dev_pki(&data_dir, &sip.ip().to_string())?;
    let grpc: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::new(sip.ip(), grpc + i))
        .collect();
    // Metrics 30 above the first registry port (the edges' admin listeners are 10 above), on
    // loopback whatever --sip says: plain HTTP with no allow-list belongs on this host only.
    let metrics = SocketAddr::from(([127, 0, 0, 1], grpc[0].port() + 30));
    crate::telemetry::serve(metrics, &[])?;
    let mut nodes = vec![];
    for (i, addr) in grpc.iter().enumerate() {
        let id = i as u64 + 1;
        let mut cfg = NodeConfig::new(id, *addr, data_dir.join(format!("registry-{id}")));
        cfg.tls = Some(Tls::load(&pki.nodes[i])?);
        nodes.push(
            Node::start(cfg)
                .await
                .with_context(|| format!("registry node {id} on {addr}"))?,
        );
    }
    if !nodes[0].is_initialized().await? {
        let members = grpc
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, *a))
            .collect();
        nodes[0].initialize(&members).await?;
        info!("registry initialised: three voters");
    }
    let sites: Vec<_> = (0..3)
        .map(|i| {
            site_config(
                i,
                sip,
                rtp,
                &grpc,
                &secret,
                Some(pki.edges[i].clone()),
                &data_dir,
            )
        })
        .collect();
    for s in &sites {
        s.validate()?;
    }
    let mut banner = String::from("Orbit dev: three sites, one registry\n\n");
    for (i, s) in sites.iter().enumerate() {
        let first = 1000 * (i + 1) + 1;
        banner += &format!(
            "  {}  SIP {} (UDP+TCP), TLS {}, RTP {}-{}, extensions {}-{}, registry {}\n",
            s.site,
            s.sip.listen,
            s.sip.tls_listen.expect("dev has TLS").port(),
            s.media.port_min,
            s.media.port_max,
            first,
            first + 9,
            grpc[i],
        );
    }
    banner += &format!(
        "\n  password pw<ext> (1001/pw1001, ...), any domain; any extension may register at any site\n\
         \n  call park: transfer a call to 700 (or a slot 701-720); dial the slot at any site to\n\
         \x20 retrieve it; unanswered after 90 s it rings the parker back wherever it is registered\n\
         \n  call pickup: every desk is in one pickup group; dial *8 to answer the call ringing\n\
         \x20 longest at any desk of any site, *8<ext> or **<ext> for the one ringing <ext>\n\
         \n  lamp keys: SUBSCRIBE (Event: dialog) to 700 or to a slot, at any site\n\
         \n  softphone: server {sip}, user 1001, password pw1001; call 2001 registered at site-b\n\
         \n  admin: `orbitctl --endpoint {} cluster status`, `... parked list --watch`; an edge's calls\n\
         \x20 and phones: `orbitctl --endpoint {} calls list` (site A's; B and C on the next ports); run\n\
         \x20 from this directory it uses the admin certificate in {} (the registry speaks mutual TLS)\n\
         \n  metrics: http://{metrics}/metrics (Prometheus text)\n\
         \n  state under {}; Ctrl-C drains the sites (calls up after 5 s get BYE) and stops.\n",
        grpc[0],
        sites[0].admin.as_ref().expect("dev has admin listeners").listen,
        pki_dir(&data_dir).display(),
        data_dir.display()
    );
    println!("{banner}");
    let result = crate::run_sites(
        sites.into_iter().map(|c| (c, Some(tls.clone()))).collect(),
        std::future::pending(),
    )
    .await
    .map(|_| ());
    for n in nodes {
        n.shutdown().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dev_desk_is_in_one_pickup_group_at_every_site() {
        let sip: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let grpc: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 50051 + i)))
            .collect();
        for i in 0..3 {
            let c = site_config(
                i,
                sip,
                20000,
                &grpc,
                "a-trunk-secret-of-some-length",
                None,
                Path::new("/tmp"),
            );
            c.validate().unwrap();
            let groups = &c.tenant.pickup_groups;
            assert_eq!(groups.len(), 1);
            assert_eq!(
                groups[0].members.len(),
                30,
                "1001-1010, 2001-2010, 3001-3010"
            );
        }
    }
}
