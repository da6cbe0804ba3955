//! Group commit on the leader: proposals that arrive while earlier entries are in flight go
//! into one log entry together. openraft 0.9 appends and fsyncs each client write on its own
//! (its core waits for every flush), so without this every command costs an fsync, a
//! replication message to each follower and an apply on every node; under load a batch takes
//! all of that once for many commands, and on a slow disk it is what keeps the commit rate
//! above the fsync rate.
//!
//! Entries are handed to Raft one after another from a single task, so their stamped times
//! never step back along the log; a few stay in flight at once so that one entry's replication
//! overlaps the next one's fsync.

use std::sync::Arc;

use openraft::error::{ClientWriteError, ForwardToLeader};
use openraft::BasicNode;
use orbit_state::{Command, Event, Rejection};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{info_span, Instrument};

use crate::log_clock::LogClock;
use crate::node::wall_ms;
use crate::{NodeId, Raft, Request, Response};

/// At most this many commands in one entry (a bound on an entry's size, ~100 kB).
const MAX_BATCH: usize = 256;
/// Entries handed to Raft and not yet answered.
const IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    NotLeader(ForwardToLeader<NodeId, BasicNode>),
    #[error("raft: {0}")]
    Raft(String),
}

/// The committed index and the command's own outcome.
pub type Written = Result<(u64, Result<Event, Rejection>), WriteError>;

/// A command waiting for its entry.
struct Queued {
    cmd: Command,
    /// The edge that proposed it, if one did.
    by: Option<String>,
    /// Its request id, if it has one.
    request: Option<String>,
    /// The trace it was proposed in, if it is being traced.
    trace: Option<String>,
    reply: oneshot::Sender<Written>,
}

/// The handle proposals go through; clones share one queue.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Queued>,
    /// While set, nothing new is handed to Raft (a leadership transfer lets the followers'
    /// leader leases run out); what arrives waits in the queue.
    held: Arc<watch::Sender<bool>>,
    /// One membership change or leadership transfer at a time on this node.
    changes: Arc<tokio::sync::Mutex<()>>,
}

/// Writes held until this is dropped ([`Batcher::hold`]).
pub(crate) struct Held(Arc<watch::Sender<bool>>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl Batcher {
    /// Start the batching task for `raft`, stamping entries by `clock`; it ends when the last
    /// handle is dropped.
    pub fn start(raft: Raft, clock: Arc<std::sync::Mutex<LogClock>>) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Arc::new(watch::Sender::new(false));
        tokio::spawn(run(raft, clock, rx, held.subscribe()));
        Batcher {
            tx,
            held,
            changes: Default::default(),
        }
    }

    /// The right to change the membership or the leader, if nobody else on this node is
    /// changing either (UNAVAILABLE otherwise: try again shortly).
    pub(crate) fn change(&self) -> Result<tokio::sync::OwnedMutexGuard<()>, tonic::Status> {
        self.changes.clone().try_lock_owned().map_err(|_| {
            tonic::Status::unavailable(
                "another membership change or leadership transfer is under way: try again shortly",
            )
        })
    }

    /// Whether writes are held now (a leadership transfer under way).
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Hand nothing new to Raft until the guard is dropped.
    pub(crate) fn hold(&self) -> Held {
        self.held.send_replace(true);
        Held(self.held.clone())
    }

    /// Queue `cmd`; the answer comes once its entry is committed and applied (or refused).
    pub fn submit(&self, cmd: Command) -> oneshot::Receiver<Written> {
        self.submit_as(cmd, None, None)
    }

    /// Queue `cmd` proposed by edge `by` (when an edge proposed it): applied only if that edge
    /// may propose it then; with request id `request`, applied once however often it comes.
    pub fn submit_as(
        &self,
        cmd: Command,
        by: Option<String>,
        request: Option<String>,
    ) -> oneshot::Receiver<Written> {
        let (reply, rx) = oneshot::channel();
        let q = Queued {
            cmd,
            by,
            request,
            trace: orbit_trace::recorded_traceparent(),
            reply,
        };
        if let Err(mpsc::error::SendError(q)) = self.tx.send(q) {
            let _ = q
                .reply
                .send(Err(WriteError::Raft("registry node stopped".into())));
        }
        rx
    }

    pub async fn write(&self, cmd: Command) -> Written {
        self.submit(cmd)
            .await
            .unwrap_or_else(|_| Err(WriteError::Raft("registry node stopped".into())))
    }
}

async fn run(
    raft: Raft,
    clock: Arc<std::sync::Mutex<LogClock>>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    mut held: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        // While every slot is taken, what arrives waits here and joins the next batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // A hold may have begun while this waited for a slot.
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let mut cmds = Vec::with_capacity(n);
        let mut by = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut traces = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(n);
        for q in batch {
            cmds.push(q.cmd);
            by.push(q.by);
            ids.push(q.request);
            traces.push(q.trace);
            replies.push(q.reply);
        }
        for v in [&mut by, &mut ids, &mut traces] {
            if v.iter().all(Option::is_none) {
                v.clear();
            }
        }
        // The commit of the entry (append, replicate, apply here), linked to each traced
        // proposal it carries.
        let span = orbit_trace::linked(traces.iter().flatten().map(String::as_str), || {
            info_span!("registry.commit", commands = n)
        });
        let t0 = std::time::Instant::now();
        // Never behind the log's time (`log_clock.rs`).
        let at = clock
            .lock()
            .unwrap()
            .stamp(wall_ms(), tokio::time::Instant::now());
        let pending = match raft
            .client_write_ff(Request {
                at,
                cmds,
                by,
                ids,
                traces,
            })
            .instrument(span.clone())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                answer_all(replies, Err(WriteError::Raft(e.to_string())));
                continue;
            }
        };
        tokio::spawn(
            async move {
                let _permit = permit;
                match pending.await {
                    Ok(Ok(r)) => match r.data {
                        Response::Applied(outcomes) if outcomes.len() == n => {
                            crate::node_metrics::entry(t0.elapsed().as_secs_f64(), &outcomes);
                            for (tx, o) in replies.into_iter().zip(outcomes) {
                                let _ = tx.send(Ok((r.log_id.index, o)));
                            }
                        }
                        _ => answer_all(
                            replies,
                            Err(WriteError::Raft("entry applied as something else".into())),
                        ),
                    },
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                        answer_all(replies, Err(WriteError::NotLeader(f)))
                    }
                    Ok(Err(e)) => answer_all(replies, Err(WriteError::Raft(e.to_string()))),
                    Err(_) => answer_all(replies, Err(WriteError::Raft("raft stopped".into()))),
                }
            }
            .instrument(span),
        );
    }
}

fn answer_all(replies: Vec<oneshot::Sender<Written>>, w: Written) {
    for tx in replies {
        let _ = tx.send(w.clone());
    }
}
