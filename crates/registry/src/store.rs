//! Raft storage on redb: the log, the vote, the committed index and the current snapshot in one
//! database file; the state machine (the orbit state) in memory, rebuilt at start from the
//! snapshot plus the committed log that openraft re-applies.
//!
//! Durability: every write openraft must be able to rely on (log entries, vote, truncation,
//! purge marker, snapshot) is a redb transaction committed with `Durability::Immediate`, which
//! returns only after fsync; [`LogStore::append`] reports the entries flushed only then. The
//! committed index is written without fsync: losing it only makes a restarted node re-learn it
//! from the leader.

// openraft's traits fix the error type (`StorageError`, large); helpers return it as well.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use orbit_state::{Command, Event, Orbit, Rejection};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{NodeId, Response, TypeConfig};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";

type SResult<T> = Result<T, StorageError<NodeId>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the store open (redb locks the file).
    #[error("the registry store {path} is in use by another process")]
    InUse { path: String },
    #[error("opening the registry store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::Error,
    },
}

/// Open (or create) the store at `path`: the log store and the state machine, restored from
/// the last snapshot.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let err = |e: redb::Error| StoreError::Open {
        path: path.display().to_string(),
        source: e,
    };
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.display().to_string(),
        },
        e => err(e.into()),
    })?;
    // Create the tables, so that readers never meet a missing one.
    let tx = db.begin_write().map_err(|e| err(e.into()))?;
    tx.open_table(LOGS).map_err(|e| err(e.into()))?;
    tx.open_table(META).map_err(|e| err(e.into()))?;
    tx.commit().map_err(|e| err(e.into()))?;
    let db = Arc::new(db);
    let log = LogStore {
        db: db.clone(),
        committed: Default::default(),
    };
    let mut data = SmData::default();
    if let Some(s) = read_meta::<StoredSnapshot>(&db, SNAPSHOT).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        source: redb::Error::Corrupted(e.to_string()),
    })? {
        if let Ok(d) = serde_json::from_slice::<SmData>(&s.data) {
            data = d;
        }
    }
    // What the log holds now was committed (or not) before this process: replayed, not seen.
    let in_log = {
        let tx = db.begin_read().map_err(|e| err(e.into()))?;
        let t = tx.open_table(LOGS).map_err(|e| err(e.into()))?;
        let last = t.last().map_err(|e| err(e.into()))?;
        last.map(|(k, _)| k.value()).unwrap_or(0)
    };
    let sm = StateMachineStore {
        clock: Arc::new(std::sync::Mutex::new(crate::log_clock::LogClock::new(
            in_log,
            tokio::time::Instant::now(),
        ))),
        db,
        data: Arc::new(RwLock::new(data)),
        snapshots_built: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        events: Default::default(),
        applied: Default::default(),
        complete_after: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    let start = sm
        .data
        .read()
        .unwrap()
        .last_applied
        .map(|l| l.index)
        .unwrap_or(0);
    sm.complete_after
        .store(start, std::sync::atomic::Ordering::Relaxed);
    Ok((log, sm))
}

fn io_read<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

fn io_write<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

fn logs_read<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn logs_write<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_meta<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> SResult<Option<T>> {
    let tx = db.begin_read().map_err(io_read)?;
    let t = tx.open_table(META).map_err(io_read)?;
    match t.get(key).map_err(io_read)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(io_read)?)),
        None => Ok(None),
    }
}

/// Write one meta row, durably (fsync before returning).
fn write_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> SResult<()> {
    let bytes = serde_json::to_vec(value).map_err(io_write)?;
    let tx = db.begin_write().map_err(io_write)?;
    {
        let mut t = tx.open_table(META).map_err(io_write)?;
        t.insert(key, bytes.as_slice()).map_err(io_write)?;
    }
    tx.commit().map_err(io_write)
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The committed index openraft last reported, not yet written: it goes to disk with the
    /// next append (a transaction of its own per commit and per heartbeat would cost more than
    /// the hint is worth; losing it only makes a restarted node re-learn it from the leader).
    committed: Arc<std::sync::Mutex<Option<Option<LogId<NodeId>>>>>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        let tx = self.db.begin_read().map_err(logs_read)?;
        let t = tx.open_table(LOGS).map_err(logs_read)?;
        let mut out = vec![];
        for item in t.range::<u64>(range).map_err(logs_read)? {
            let (_, v) = item.map_err(logs_read)?;
            out.push(serde_json::from_slice(v.value()).map_err(logs_read)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = read_meta(&self.db, LAST_PURGED)?;
        let tx = self.db.begin_read().map_err(io_read)?;
        let t = tx.open_table(LOGS).map_err(io_read)?;
        let last = match t.last().map_err(io_read)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io_read)?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        write_meta(&self.db, VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        read_meta(&self.db, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        *self.committed.lock().unwrap() = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        if let Some(c) = *self.committed.lock().unwrap() {
            return Ok(c);
        }
        Ok(read_meta::<Option<LogId<NodeId>>>(&self.db, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tx = self.db.begin_write().map_err(logs_write)?;
        {
            let mut t = tx.open_table(LOGS).map_err(logs_write)?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(logs_write)?;
                t.insert(e.log_id.index, bytes.as_slice())
                    .map_err(logs_write)?;
            }
        }
        if let Some(c) = self.committed.lock().unwrap().take() {
            let bytes = serde_json::to_vec(&c).map_err(logs_write)?;
            let mut t = tx.open_table(META).map_err(logs_write)?;
            t.insert(COMMITTED, bytes.as_slice()).map_err(logs_write)?;
        }
        // Immediate durability: commit returns after fsync; only then are the entries flushed.
        match tx.commit() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(logs_write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let tx = self.db.begin_write().map_err(logs_write)?;
        {
            let mut t = tx.open_table(LOGS).map_err(logs_write)?;
            t.retain_in(log_id.index.., |_, _| false)
                .map_err(logs_write)?;
        }
        tx.commit().map_err(logs_write)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // The marker first: entries at or before it are ignored even if the delete is lost.
        write_meta(&self.db, LAST_PURGED, &log_id)?;
        let tx = self.db.begin_write().map_err(logs_write)?;
        {
            let mut t = tx.open_table(LOGS).map_err(logs_write)?;
            t.retain_in(..=log_id.index, |_, _| false)
                .map_err(logs_write)?;
        }
        tx.commit().map_err(logs_write)
    }
}

/// The applied state: the orbit state, the admin requests seen, and Raft's own bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    pub orbit: Orbit,
    #[serde(default)]
    pub requests: Requests,
}

/// Admin API requests applied lately, by request id, with their outcome: a retry of one (the
/// client did not hear the answer) is answered the same and not applied again. Part of the
/// replicated state, so that every replica (and a new leader) answers alike; the oldest are
/// forgotten beyond [`REQUESTS_KEPT`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(String, Seen)>")]
#[serde(into = "Vec<(String, Seen)>")]
pub struct Requests {
    order: std::collections::VecDeque<String>,
    outcomes: std::collections::HashMap<String, Seen>,
}

/// A request applied: its command (a retry must be the same one) and its outcome.
pub type Seen = (Command, Result<Event, Rejection>);

/// Request ids remembered (a retry comes within seconds; this many covers hours of an
/// operator's changes).
pub const REQUESTS_KEPT: usize = 10_000;

impl Requests {
    /// The answer to `cmd` under request `id`, if that id was seen: the first outcome for the
    /// same command, a refusal for another one (an id reused for a different change must not
    /// pass for it).
    pub fn answer(&self, id: &str, cmd: &Command) -> Option<Result<Event, Rejection>> {
        let (first, outcome) = self.outcomes.get(id)?;
        Some(if first == cmd {
            outcome.clone()
        } else {
            Err(Rejection::RequestIdReused(
                id.rsplit(' ').next().unwrap_or(id).into(),
            ))
        })
    }

    fn record(&mut self, id: String, outcome: Seen) {
        if self.outcomes.len() >= REQUESTS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.outcomes.insert(id, outcome);
    }

    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

impl From<Vec<(String, Seen)>> for Requests {
    fn from(v: Vec<(String, Seen)>) -> Requests {
        let mut r = Requests::default();
        for (id, o) in v {
            r.record(id, o);
        }
        r
    }
}

impl From<Requests> for Vec<(String, Seen)> {
    fn from(mut r: Requests) -> Self {
        r.order
            .into_iter()
            .filter_map(|id| r.outcomes.remove(&id).map(|o| (id, o)))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine: the orbit state in memory (shared with whoever reads it), snapshots on
/// disk.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    pub data: Arc<RwLock<SmData>>,
    snapshots_built: Arc<std::sync::atomic::AtomicU64>,
    /// The latest applied entries that changed something, in log order (not persisted: a
    /// reader that falls behind resynchronises from the state).
    pub events: Arc<std::sync::Mutex<std::collections::VecDeque<Applied>>>,
    /// Ticks on every apply, for whoever waits for new state (deadline timer, watchers).
    pub applied: Arc<tokio::sync::Notify>,
    /// Events of entries after this index are all in `events`; older ones may not be (they are
    /// in the snapshot the node started from, or were evicted).
    pub complete_after: Arc<std::sync::atomic::AtomicU64>,
    /// The log's time here, and when what was applied may fire (`log_clock.rs`).
    pub clock: Arc<std::sync::Mutex<crate::log_clock::LogClock>>,
}

/// Applied entries kept for watchers.
pub const EVENT_BACKLOG: usize = 100_000;

/// What one log entry did: the commands of it that were not refused, each with its event.
/// Refused commands change nothing, so these alone rebuild the state on a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub at: orbit_state::Millis,
    pub done: Vec<(orbit_state::Command, orbit_state::Event)>,
}

impl StateMachineStore {
    /// A handle that tells whether anything still holds the database open.
    pub(crate) fn db_handle(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let (bytes, last, membership) = {
            let d = self.data.read().unwrap();
            (
                serde_json::to_vec(&*d)
                    .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?,
                d.last_applied,
                d.last_membership.clone(),
            )
        };
        let n = self
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("--{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        write_meta(&self.db, SNAPSHOT, &stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> SResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let d = self.data.read().unwrap();
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.data.write().unwrap();
        let mut out = vec![];
        let mut events = self.events.lock().unwrap();
        for e in entries {
            d.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::Internal),
                EntryPayload::Normal(req) => {
                    let mut outcomes = Vec::with_capacity(req.cmds.len());
                    let mut done = vec![];
                    let (by, ids, traces) = (req.by, req.ids, req.traces);
                    for (i, cmd) in req.cmds.into_iter().enumerate() {
                        let edge = by.get(i).and_then(|b| b.as_deref());
                        let id = ids.get(i).and_then(|b| b.clone());
                        // A traced proposal's apply, on every node, joins its trace.
                        let _span = traces.get(i).and_then(|t| t.as_deref()).map(|t| {
                            orbit_trace::continuing(Some(t), || {
                                tracing::info_span!(
                                    "registry.apply",
                                    index = e.log_id.index,
                                    kind = cmd.kind()
                                )
                            })
                            .entered()
                        });
                        // A request seen already: its first outcome, nothing applied again.
                        if let Some(answer) =
                            id.as_deref().and_then(|id| d.requests.answer(id, &cmd))
                        {
                            outcomes.push(answer);
                            continue;
                        }
                        let r = d.orbit.apply_as(req.at, edge, &cmd);
                        let cmd_copy = id.is_some().then(|| cmd.clone());
                        if let Ok(ev) = &r {
                            done.push((cmd, ev.clone()));
                        }
                        if let (Some(id), Some(cmd)) = (id, cmd_copy) {
                            d.requests.record(id, (cmd, r.clone()));
                        }
                        outcomes.push(r);
                    }
                    let evs: Vec<_> = done.iter().map(|(_, ev)| ev).collect();
                    self.clock.lock().unwrap().applied(
                        e.log_id.index,
                        e.log_id.leader_id.term,
                        req.at,
                        tokio::time::Instant::now(),
                        &evs,
                    );
                    if !done.is_empty() {
                        if events.len() == EVENT_BACKLOG {
                            if let Some(old) = events.pop_front() {
                                self.complete_after
                                    .store(old.index, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        events.push_back(Applied {
                            index: e.log_id.index,
                            at: req.at,
                            done,
                        });
                    }
                    out.push(Response::Applied(outcomes))
                }
                EntryPayload::Membership(m) => {
                    d.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::Internal);
                }
            }
        }
        drop(events);
        self.applied.notify_waiters();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let bytes = snapshot.into_inner();
        let data: SmData = serde_json::from_slice(&bytes).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        write_meta(&self.db, SNAPSHOT, &stored)?;
        let index = data.last_applied.map(|l| l.index).unwrap_or(0);
        *self.data.write().unwrap() = data;
        self.clock.lock().unwrap().replaced();
        self.events.lock().unwrap().clear();
        self.complete_after
            .store(index, std::sync::atomic::Ordering::Relaxed);
        self.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        Ok(
            read_meta::<StoredSnapshot>(&self.db, SNAPSHOT)?.map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            }),
        )
    }
}
