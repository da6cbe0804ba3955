//! A recall ringing its parker, recorded as a ring: picking it up claims its park in the same
//! step, and only a park its edge holds may be named.

use super::*;

/// A recall ringing the parker for park `p`, recorded as a ring of 1002.
fn recall_ring(o: &mut Orbit, p: &Parked) -> RingId {
    let call = RingCall {
        caller_uri: p.call.caller_uri.clone(),
        caller_display: None,
        edge: "site-a".into(),
        call_id: p.call.call_id.clone(),
        local_tag: p.call.local_tag.clone(),
        remote_tag: p.call.remote_tag.clone(),
        park: Some(p.id),
        called: None,
    };
    let ring = Command::Ring {
        tenant: "example.com".into(),
        ext: "1002".into(),
        call,
    };
    match o.apply(T0, &ring).unwrap() {
        Event::Ringing(r) => r.id,
        e => panic!("{e:?}"),
    }
}

fn pickup_1002(o: &mut Orbit, ring: Option<RingId>) -> Result<Event, Rejection> {
    let cmd = Command::Pickup {
        tenant: "example.com".into(),
        exts: vec!["1002".into()],
        ring,
        by: "site-b/2001".into(),
    };
    o.apply(T0, &cmd)
}

#[test]
fn picking_up_a_recall_takes_its_park_out_of_the_slot_in_the_same_step() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    let ring = recall_ring(&mut o, &p);
    match pickup_1002(&mut o, None) {
        Ok(Event::PickedUp {
            ringing,
            parked: Some(parked),
            ..
        }) => {
            assert_eq!((ringing.id, parked.id), (ring, p.id));
        }
        e => panic!("{e:?}"),
    }
    assert!(
        o.in_slot("example.com", p.slot).is_none(),
        "the slot is free"
    );
    // The parker answering the recall, or a retriever, comes too late.
    assert_eq!(
        claim(&mut o, p.slot, Some(p.id)),
        Err(Rejection::Gone(p.id))
    );
}

#[test]
fn a_recall_whose_call_was_retrieved_cannot_be_picked_up() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    let ring = recall_ring(&mut o, &p);
    assert!(matches!(
        claim(&mut o, p.slot, None),
        Ok(Event::Claimed { .. })
    ));
    // Its ring is still recorded until the holding edge ends it, but it is nobody's to take.
    assert_eq!(pickup_1002(&mut o, Some(ring)), Err(Rejection::NotRinging));
    assert_eq!(pickup_1002(&mut o, None), Err(Rejection::NotRinging));
}

#[test]
fn a_recalls_ring_may_name_only_a_park_its_edge_holds_for_its_tenant() {
    let mut o = orbit(SlotChoice::FirstFree);
    let p = park(&mut o, T0, None, 1).unwrap();
    let ring = |edge: &str, tenant: &str, park: ParkId| Command::Ring {
        tenant: tenant.into(),
        ext: "1002".into(),
        call: RingCall {
            caller_uri: "sip:1@example.com".into(),
            caller_display: None,
            edge: edge.into(),
            call_id: "c".into(),
            local_tag: "l".into(),
            remote_tag: "r".into(),
            park: Some(park),
            called: None,
        },
    };
    // Another edge's park, another tenant's, a park that does not exist: a pickup of such a
    // ring would take a call its edge does not hold.
    for cmd in [
        ring("site-b", "example.com", p.id),
        ring("site-a", "other.com", p.id),
        ring("site-a", "example.com", p.id + 100),
    ] {
        assert!(
            matches!(o.apply(T0, &cmd), Err(Rejection::Gone(_))),
            "{cmd:?}"
        );
    }
    assert!(o.apply(T0, &ring("site-a", "example.com", p.id)).is_ok());
}
