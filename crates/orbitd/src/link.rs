//! An edge's link to the registry: proposals out (each on its own task, so a slow commit holds
//! up nothing else), outcomes and the watch stream in, over the channels the edge driver reads.

use std::sync::Arc;

use orbit_edge::config::RegistryLink;
use orbit_edge::driver::OrbitIo;
use orbit_edge::orbit::{OrbitError, OrbitFeed, Proposal};
use orbit_registry::{Link, WatchUpdate};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Start the link's tasks on `rt`; the edge resumes its watch after `after` (0: from the
/// whole state).
pub fn start(
    cfg: &RegistryLink,
    rt: &tokio::runtime::Handle,
    after: u64,
) -> anyhow::Result<OrbitIo> {
    let tls = cfg
        .tls
        .as_ref()
        .map(|t| {
            orbit_registry::Tls::load(&orbit_registry::TlsFiles {
                ca: t.ca.clone(),
                cert: t.cert.clone(),
                key: t.key.clone(),
            })
        })
        .transpose()?;
    let link = Arc::new(Link::new(&cfg.nodes, tls.as_ref())?);
    let (prop_tx, mut prop_rx) = mpsc::unbounded_channel::<Proposal>();
    let (feed_tx, feed_rx) = mpsc::channel::<OrbitFeed>(65_536);

    let (l, tx) = (link.clone(), feed_tx.clone());
    rt.spawn(async move {
        while let Some(p) = prop_rx.recv().await {
            let (l, tx) = (l.clone(), tx.clone());
            tokio::spawn(async move {
                let (index, outcome) = match l.propose(&p.cmd).instrument(p.span).await {
                    Ok((index, r)) => (index, r.map_err(OrbitError::Rejected)),
                    // Not committed, or not known to be: the flow gives up either way (an
                    // event committed after all still arrives through the watch).
                    Err(e) => (0, Err(OrbitError::Unavailable(e.to_string()))),
                };
                let _ = tx
                    .send(OrbitFeed::Outcome {
                        token: p.token,
                        index,
                        outcome,
                    })
                    .await;
            });
        }
    });

    rt.spawn(async move {
        let feed = |u| match u {
            WatchUpdate::Applied { index, at, cmds } => OrbitFeed::Applied { index, at, cmds },
            WatchUpdate::Resync { index, orbit } => OrbitFeed::Resync { index, orbit },
        };
        link.watch(after, feed_tx, feed).await
    });
    Ok(OrbitIo {
        proposals: prop_tx,
        feed: feed_rx,
    })
}
