//! An operator's `Send`: the park rings an extension as a recall would, leaves the deadline
//! index, and only `Send` itself can put a park in that stage.

use super::*;

fn directory(o: &mut Orbit) {
    let seed = Command::SeedTenant {
        tenant: "example.com".into(),
        extensions: vec!["1001".into(), "1002".into(), "3001".into()],
        groups: vec![],
    };
    o.apply(T0, &seed).unwrap();
}

fn send(o: &mut Orbit, now: Millis, park: ParkId, to: &str) -> Result<Event, Rejection> {
    o.apply(
        now,
        &Command::Send {
            park,
            to: to.into(),
        },
    )
}

#[test]
fn a_sent_park_rings_its_extension_and_no_deadline_fires_meanwhile() {
    let mut o = orbit(SlotChoice::FirstFree);
    directory(&mut o);
    let p = park(&mut o, T0, None, 1).unwrap();
    let Ok(Event::Sent(s)) = send(&mut o, T0 + 1_000, p.id, "3001") else {
        panic!("sent")
    };
    assert_eq!(s.sent_to.as_deref(), Some("3001"));
    assert_eq!(
        s.phase,
        Phase::Recalling {
            stage: RecallStage::Sent,
            since: T0 + 1_000
        }
    );
    // Out of the deadline index: nothing is due at the old deadline, Expire is refused.
    assert!(o.due(p.deadline + 1).is_empty());
    assert!(o
        .apply(p.deadline + 1, &Command::Expire { park: p.id })
        .is_err());
    // Extend and Move belong to waiting parks only.
    let extend = Command::Extend {
        park: p.id,
        by_ms: 1_000,
    };
    assert_eq!(o.apply(T0, &extend), Err(Rejection::Recalling(p.id)));
    // The slot stays claimable: a retriever (or the desk answering) takes it.
    assert!(matches!(
        claim(&mut o, p.slot, Some(p.id)),
        Ok(Event::Claimed { .. })
    ));
    assert_eq!(send(&mut o, T0, p.id, "3001"), Err(Rejection::Gone(p.id)));
}

#[test]
fn unanswered_it_goes_on_to_the_parker_and_the_desk_is_forgotten() {
    let mut o = orbit(SlotChoice::FirstFree);
    directory(&mut o);
    let p = park(&mut o, T0, None, 1).unwrap();
    send(&mut o, T0, p.id, "3001").unwrap();
    let parker = Command::RecallStage {
        park: p.id,
        stage: RecallStage::Parker,
    };
    let Ok(Event::RecallStage(r)) = o.apply(T0 + 20_000, &parker) else {
        panic!("staged")
    };
    assert_eq!(r.sent_to, None);
    // Sent again while recalling the parker: allowed (an operator's choice).
    assert!(send(&mut o, T0 + 21_000, p.id, "1001").is_ok());
}

#[test]
fn only_an_extension_the_tenant_has_and_only_send_itself() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    // No edge has said which extensions there are: refused, not rung blindly.
    assert_eq!(
        send(&mut o, T0, p.id, "3001"),
        Err(Rejection::NoSuchExtension("3001".into()))
    );
    directory(&mut o);
    for bad in ["9999", "30x1", ""] {
        let before = o.clone();
        assert_eq!(
            send(&mut o, T0, p.id, bad),
            Err(Rejection::NoSuchExtension(bad.into()))
        );
        assert_eq!(o.parked(p.id), before.parked(p.id), "nothing changed");
    }
    // An edge's stage change cannot make a park "sent" (it names no extension).
    o.apply(p.deadline, &Command::Expire { park: p.id })
        .unwrap();
    let sneaky = Command::RecallStage {
        park: p.id,
        stage: RecallStage::Sent,
    };
    assert_eq!(o.apply(T0, &sneaky), Err(Rejection::SendNotAStage));
    // Nor may an edge send at all: it is an operator's command.
    assert_eq!(
        o.proposer(&Command::Send {
            park: p.id,
            to: "3001".into()
        }),
        crate::Proposer::Registry
    );
}

#[test]
fn a_sent_park_survives_a_snapshot_and_stays_out_of_the_deadline_index() {
    let mut o = orbit(SlotChoice::FirstFree);
    directory(&mut o);
    let p = park(&mut o, T0, None, 1).unwrap();
    send(&mut o, T0, p.id, "3001").unwrap();
    let back: Orbit = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert_eq!(back.parked(p.id), o.parked(p.id));
    assert!(back.due(p.deadline + 1).is_empty());
}
