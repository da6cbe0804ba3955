//! The redb store against openraft's own storage conformance suite, and across a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, Vote,
};
use orbit_registry::{open, LogStore, Request, Response, StateMachineStore, TypeConfig};
use orbit_state::{Command, Event, LotConfig, SlotChoice};

static N: AtomicU32 = AtomicU32::new(0);

/// A database file removed when the test is done with it.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "orbit-registry-{}-{}.redb",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDb> for Builder {
    async fn build(&self) -> Result<(TempDb, LogStore, StateMachineStore), StorageError<u64>> {
        let path = temp_path();
        let (log, sm) = open(&path).expect("open store");
        Ok((TempDb(path), log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request::one(1_000 * index, cmd)),
    }
}

fn lot() -> LotConfig {
    LotConfig {
        tenant: "example.com".into(),
        park_ext: "700".into(),
        first_slot: 701,
        last_slot: 720,
        parking_ms: 90_000,
        recall_ring_ms: 20_000,
        fallback: None,
        choice: SlotChoice::FirstFree,
    }
}

/// Call `n` parked by 1002 at site A, in `slot` or the next free one.
fn park(n: u32, slot: Option<u32>) -> Command {
    Command::Park {
        lot: lot().key(),
        slot,
        call: orbit_state::CallInfo {
            caller_uri: format!("sip:{n}@example.com"),
            caller_display: None,
            parker: "1002".into(),
            edge: "site-a".into(),
            call_id: format!("c{n}"),
            local_tag: "l".into(),
            remote_tag: "r".into(),
            codec: None,
            trace: None,
        },
    }
}

#[tokio::test]
async fn vote_log_and_state_survive_a_restart() {
    let path = temp_path();
    let _guard = TempDb(path.clone());
    let park = park(1, None);
    {
        let (mut log, mut sm) = open(&path).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let entries = vec![
            entry(3, 1, Command::SetLot(lot())),
            entry(3, 2, park.clone()),
        ];
        // The suite checks flush callbacks; here only what is on disk afterwards matters.
        openraft::storage::RaftLogStorageExt::blocking_append(&mut log, entries.clone())
            .await
            .unwrap();
        let out = sm.apply(entries).await.unwrap();
        assert!(
            matches!(&out[1], Response::Applied(o) if matches!(&o[..], [Ok(Event::Parked(p))] if p.slot == 701 && p.deadline == 92_000))
        );
        sm.build_snapshot().await.unwrap();
        // One more entry after the snapshot: the log keeps it for replay.
        let e3 = entry(3, 3, park.clone());
        openraft::storage::RaftLogStorageExt::blocking_append(&mut log, vec![e3])
            .await
            .unwrap();
        log.save_committed(Some(log_id(3, 3))).await.unwrap();
    }
    let (mut log, mut sm) = open(&path).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(3, 3)));
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3, 2)), "restored from the snapshot");
    let parked: Vec<u32> = sm
        .data
        .read()
        .unwrap()
        .orbit
        .all_parked()
        .map(|p| p.slot)
        .collect();
    assert_eq!(parked, vec![701]);
    // openraft re-applies entry 3 from the log on start; applying it gives the same answer as
    // it would have before the restart.
    let mut reader = log.get_log_reader().await;
    let rest = openraft::RaftLogReader::try_get_log_entries(&mut reader, 3..)
        .await
        .unwrap();
    let out = sm.apply(rest).await.unwrap();
    assert!(
        matches!(&out[0], Response::Applied(o) if matches!(&o[..], [Ok(Event::Parked(p))] if p.slot == 702))
    );
}

/// A batched entry applies its commands in order at one time, each with its own outcome; the
/// watch backlog keeps the ones that took effect. Entries written before batching still read.
#[tokio::test]
async fn a_batched_entry_applies_its_commands_in_order_and_old_entries_still_read() {
    let path = temp_path();
    let _guard = TempDb(path.clone());
    let (_, mut sm) = open(&path).unwrap();
    let batch = Entry::<TypeConfig> {
        log_id: log_id(1, 1),
        payload: EntryPayload::Normal(Request {
            at: 5_000,
            cmds: vec![
                Command::SetLot(lot()),
                park(1, None),
                park(2, Some(701)), // taken by the one before it in the same entry
                park(3, None),
            ],
            by: vec![],
            ids: vec![],
            traces: vec![],
        }),
    };
    let out = sm.apply(vec![batch]).await.unwrap();
    let Response::Applied(o) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(o.len(), 4);
    assert!(matches!(&o[1], Ok(Event::Parked(p)) if p.slot == 701 && p.deadline == 95_000));
    assert!(o[2].is_err(), "{:?}", o[2]);
    assert!(matches!(&o[3], Ok(Event::Parked(p)) if p.slot == 702));
    let backlog = sm.events.lock().unwrap().clone();
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].index, 1);
    assert_eq!(backlog[0].at, 5_000);
    let cmds: Vec<_> = backlog[0].done.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        cmds,
        vec![Command::SetLot(lot()), park(1, None), park(3, None)]
    );

    // An entry of the earlier format: one `cmd`.
    let old = serde_json::json!({ "at": 7_000, "cmd": park(4, None) });
    let req: Request = serde_json::from_value(old).unwrap();
    assert_eq!(req, Request::one(7_000, park(4, None)));
}

/// Each command of an entry is checked against the edge that proposed it as it is applied:
/// site B's end of a park, proposed before site A's park made it (when nobody held it), is
/// refused where it meets the park; site A's own commands go through.
#[tokio::test]
async fn an_edges_command_is_checked_against_the_state_it_meets_at_apply() {
    let path = temp_path();
    let _guard = TempDb(path.clone());
    let (_, mut sm) = open(&path).unwrap();
    let end = Command::End {
        park: 1,
        reason: orbit_state::EndReason::HungUp,
    };
    let entry = Entry::<TypeConfig> {
        log_id: log_id(1, 1),
        payload: EntryPayload::Normal(Request {
            at: 5_000,
            cmds: vec![Command::SetLot(lot()), park(1, None), end.clone(), end],
            by: vec![
                None,
                Some("site-a".into()),
                Some("site-b".into()),
                Some("site-a".into()),
            ],
            ids: vec![],
            traces: vec![],
        }),
    };
    let out = sm.apply(vec![entry]).await.unwrap();
    let Response::Applied(o) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(matches!(&o[1], Ok(Event::Parked(p)) if p.id == 1), "{o:?}");
    assert!(
        matches!(&o[2], Err(orbit_state::Rejection::NotYours { edge, .. }) if edge == "site-b"),
        "{o:?}"
    );
    assert!(matches!(&o[3], Ok(Event::Ended { .. })), "{o:?}");
    // The watch carries what took effect only: an edge's mirror never meets the refused one.
    let done = sm.events.lock().unwrap()[0].done.len();
    assert_eq!(done, 3);
}

/// An admin request applied once however often it is retried, in the same entry or a later
/// one, and its first outcome answered each time; kept in snapshots; the oldest forgotten.
#[tokio::test]
async fn a_request_id_applies_its_command_once_and_answers_retries_alike() {
    let path = temp_path();
    let _guard = TempDb(path.clone());
    let (_, mut sm) = open(&path).unwrap();
    let extend = Command::Extend {
        park: 1,
        by_ms: 30_000,
    };
    let id = |s: &str| Some(format!("spiffe://orbit/admin/ops {s}"));
    let first = Entry::<TypeConfig> {
        log_id: log_id(1, 1),
        payload: EntryPayload::Normal(Request {
            at: 5_000,
            cmds: vec![
                Command::SetLot(lot()),
                park(1, None),
                extend.clone(),
                extend.clone(),
            ],
            by: vec![],
            ids: vec![None, None, id("x-1"), id("x-1")],
            traces: vec![],
        }),
    };
    let out = sm.apply(vec![first]).await.unwrap();
    let Response::Applied(o) = &out[0] else {
        panic!("{out:?}")
    };
    let deadline = |e: &Result<Event, orbit_state::Rejection>| match e {
        Ok(Event::Extended(p)) => p.deadline,
        e => panic!("{e:?}"),
    };
    assert_eq!(deadline(&o[2]), 125_000, "95 s + 30 s");
    assert_eq!(
        deadline(&o[3]),
        125_000,
        "the retry: the same answer, not 155 s"
    );
    // A later retry, and a new request with another id.
    let later = Entry::<TypeConfig> {
        log_id: log_id(1, 2),
        payload: EntryPayload::Normal(Request {
            at: 6_000,
            cmds: vec![extend.clone(), extend.clone()],
            by: vec![],
            ids: vec![id("x-1"), id("x-2")],
            traces: vec![],
        }),
    };
    let out = sm.apply(vec![later]).await.unwrap();
    let Response::Applied(o) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(deadline(&o[0]), 125_000);
    assert_eq!(deadline(&o[1]), 155_000);
    assert_eq!(
        sm.data.read().unwrap().orbit.parked(1).unwrap().deadline,
        155_000
    );
    // Snapshots keep what was seen.
    let json = serde_json::to_string(&*sm.data.read().unwrap()).unwrap();
    let back: orbit_registry::store::SmData = serde_json::from_str(&json).unwrap();
    assert!(back
        .requests
        .answer("spiffe://orbit/admin/ops x-1", &extend)
        .is_some());
    assert_eq!(back.requests.len(), 2);
    // The same id for another change is refused, not answered as the first one was.
    let other = Command::Extend {
        park: 1,
        by_ms: 60_000,
    };
    assert_eq!(
        back.requests.answer("spiffe://orbit/admin/ops x-1", &other),
        Some(Err(orbit_state::Rejection::RequestIdReused("x-1".into())))
    );
}
