//! Watch streams: the edges' (every applied command, or the whole state when too far behind)
//! and the admin API's (park events), served the same way: bounded in number per node, a
//! bounded piece at a time under the state's locks, until the watcher goes or the node stops.

use std::sync::Arc;

use orbit_state::{Command, Event, Millis};
use tonic::Status;
use tracing::Instrument;

use crate::pb;
use crate::store::StateMachineStore;

/// Watch streams (the edges' and the admin API's) one node serves at once: each holds a task
/// and a buffer, and anyone with a certificate may open one.
pub const MAX_WATCHERS: usize = 1_024;

/// Applied entries a watcher takes at once under the state lock (which apply needs too).
pub(crate) const WATCH_CHUNK: usize = 1_000;

/// A place for one more watch stream, or RESOURCE_EXHAUSTED.
pub(crate) fn watch_permit(
    watchers: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    watchers.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "this node serves {MAX_WATCHERS} watch streams already"
        ))
    })
}

/// A watch stream, as both the registry's and the admin API's serve them: `step(sm, cursor)`
/// takes what follows `cursor` under the state's locks (items, the new cursor, whether more is
/// waiting already); the stream sends them and waits for the next apply, ending when the
/// watcher goes away, the node stops, or a step fails (its status sent last).
pub(crate) fn serve_watch<T: Send + 'static>(
    sm: StateMachineStore,
    mut closed: tokio::sync::watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut cursor: u64,
    step: impl Fn(&StateMachineStore, u64) -> Result<(Vec<T>, u64, bool), Status> + Send + 'static,
    span: tracing::Span,
) -> std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<T, Status>>(1024);
    tokio::spawn(
        async move {
            let _permit = permit;
            loop {
                let notified = sm.applied.notified();
                let (items, next, more) = match step(&sm, cursor) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for it in items {
                    if tx.send(Ok(it)).await.is_err() {
                        return; // the watcher went away
                    }
                }
                cursor = next;
                if more {
                    continue;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tx.closed() => return,
                    _ = closed.wait_for(|c| *c) => return,
                }
            }
        }
        .instrument(span),
    );
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// What a watcher at `cursor` gets next, and its new cursor: a resync if the events after its
/// cursor are no longer all here, else those events, at most [`WATCH_CHUNK`] entries (the
/// cursor stops at the last one taken). Read under the state lock, so that the state and the
/// events agree.
pub(crate) fn next_items(
    sm: &StateMachineStore,
    cursor: u64,
) -> Result<(Vec<pb::WatchItem>, u64), Status> {
    let d = sm.data.read().unwrap();
    let events = sm.events.lock().unwrap();
    let applied = d.last_applied.map(|l| l.index).unwrap_or(0);
    let floor = sm.complete_after.load(std::sync::atomic::Ordering::Relaxed);
    if cursor < floor {
        let state = serde_json::to_vec(&d.orbit).map_err(|e| Status::internal(e.to_string()))?;
        return Ok((
            vec![pb::WatchItem {
                index: applied,
                item: Some(pb::watch_item::Item::Resync(state)),
                command: vec![],
            }],
            applied,
        ));
    }
    let mut out = vec![];
    let json =
        |v: Result<Vec<u8>, serde_json::Error>| v.map_err(|e| Status::internal(e.to_string()));
    // `Request`'s shape, borrowed: no copy of the commands per watcher.
    #[derive(serde::Serialize)]
    struct RequestRef<'a> {
        at: Millis,
        cmds: Vec<&'a Command>,
    }
    let from = events.partition_point(|a| a.index <= cursor);
    for a in events.range(from..).take(WATCH_CHUNK) {
        let (cmds, evs): (Vec<&Command>, Vec<&Event>) = a.done.iter().map(|(c, e)| (c, e)).unzip();
        out.push(pb::WatchItem {
            index: a.index,
            item: Some(pb::watch_item::Item::Event(json(serde_json::to_vec(&evs))?)),
            command: json(serde_json::to_vec(&RequestRef { at: a.at, cmds }))?,
        });
    }
    if out.len() == WATCH_CHUNK {
        // More to come: the cursor stops at the last entry taken.
        let last = out.last().map_or(cursor, |i| i.index);
        return Ok((out, last));
    }
    // Everything applied so far has been looked at (entries without events move it too).
    Ok((out, applied.max(cursor)))
}
