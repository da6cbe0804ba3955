//! What one phone's log says happened, in the checker's terms: a park as its parker saw it, a
//! retrieve as its retriever saw it, the recalls a parker's phone was rung with. Pure
//! functions of the logged messages, each reading tested on its own.

use crate::checker::{Delivery, How, Park, Told};
use crate::sipp_log::{Dir, Micros, Msg};

/// The park a parker's phone made into `slot` of party `parked`, held by site `held_at`'s
/// edge, if it got as far as sending its REFER (a call that failed before parks nothing).
pub fn park(
    msgs: &[Msg],
    slot: u32,
    parked: &str,
    held_at: &str,
    timeout_us: Micros,
) -> Option<Park> {
    let refer = msgs
        .iter()
        .find(|m| m.dir == Dir::Sent && m.method.as_deref() == Some("REFER"))?;
    // The NOTIFYs carry the transfer's progress as a sipfrag; the first final one tells.
    let told = msgs
        .iter()
        .filter(|m| m.dir == Dir::Received && m.method.as_deref() == Some("NOTIFY"))
        .find_map(|m| {
            let code: u16 = m.body.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
            match code {
                200..=299 => Some(Told::Made(m.at)),
                300.. => Some(Told::Refused),
                _ => None,
            }
        })
        .unwrap_or(Told::Unknown);
    Some(Park {
        call: refer.call_id.clone(),
        slot,
        parked: parked.to_string(),
        held_at: held_at.to_string(),
        refer_sent: refer.at,
        told,
        timeout_us,
    })
}

/// Whether the phone kept call `call` until it hung up itself: an edge that answers and then
/// hangs up (a recall whose answer lost to a retrieve committed first, which can take the
/// registry seconds under a fault) delivered nothing. The phones talk for a moment and hang
/// up themselves, so a call handed to two phones and cleared by the edge later still shows
/// as two; one cleared by the edge before the phone hung up does not (a blind spot: the
/// phones do not log whose media they heard).
fn kept(msgs: &[Msg], call: &str) -> bool {
    let first_bye = msgs
        .iter()
        .find(|m| m.call_id == call && m.method.as_deref() == Some("BYE"));
    first_bye.is_none_or(|m| m.dir == Dir::Sent)
}

/// `701: 1104` (a retriever's P-Asserted-Identity) or `Recall 701: 1104` (a recall's From):
/// the name after the slot.
fn name_after_slot(display: &str) -> Option<String> {
    let (_, name) = display.split_once(": ")?;
    Some(name.to_string())
}

/// The call a retriever who dialled `slot` got, if it was answered and kept it.
pub fn retrieve(msgs: &[Msg], slot: u32, phone: &str) -> Option<Delivery> {
    let asked = msgs
        .iter()
        .find(|m| m.dir == Dir::Sent && m.method.as_deref() == Some("INVITE"))
        .map(|m| m.at);
    let ok = msgs.iter().find(|m| {
        m.dir == Dir::Received
            && m.code == Some(200)
            && m.cseq_method == "INVITE"
            && kept(msgs, &m.call_id)
    })?;
    Some(Delivery {
        slot,
        parked: ok.asserted_display.as_deref().and_then(name_after_slot),
        how: How::Retrieved,
        asked,
        at: ok.at,
        phone: phone.to_string(),
    })
}

/// The recalls a parker's phone took: rung as `Recall <slot>: <name>`, answered, the answer
/// taken (ACKed) and the call left with it. A ring cancelled because a retriever won
/// meanwhile is no delivery.
pub fn recalls(msgs: &[Msg], phone: &str) -> Vec<Delivery> {
    let acked: std::collections::HashSet<&str> = msgs
        .iter()
        .filter(|m| m.dir == Dir::Received && m.method.as_deref() == Some("ACK"))
        .map(|m| m.call_id.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    for m in msgs {
        let Some(recall) = m
            .from_display
            .as_deref()
            .and_then(|d| d.strip_prefix("Recall "))
        else {
            continue;
        };
        let Some(slot) = recall.split(':').next().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if m.dir == Dir::Received
            && m.method.as_deref() == Some("INVITE")
            && acked.contains(m.call_id.as_str())
            && kept(msgs, &m.call_id)
            && seen.insert(m.call_id.clone())
        {
            out.push(Delivery {
                slot,
                parked: name_after_slot(recall),
                how: How::Recalled,
                asked: None,
                at: m.at,
                phone: phone.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(at: Micros, dir: Dir, method: Option<&str>, code: Option<u16>, call: &str) -> Msg {
        Msg {
            at,
            dir,
            method: method.map(str::to_string),
            code,
            target: None,
            call_id: call.into(),
            cseq_method: "INVITE".into(),
            from_display: None,
            asserted_display: None,
            body: String::new(),
        }
    }

    fn notify(at: Micros, frag: &str) -> Msg {
        let mut m = msg(at, Dir::Received, Some("NOTIFY"), None, "c1");
        m.body = frag.into();
        m
    }

    #[test]
    fn a_park_is_made_refused_or_unknown_by_the_first_final_notify() {
        let refer = msg(10, Dir::Sent, Some("REFER"), None, "c1");
        let trying = notify(20, "SIP/2.0 100 Trying");
        let p = |extra: Vec<Msg>| {
            let mut v = vec![refer.clone(), trying.clone()];
            v.extend(extra);
            park(&v, 701, "1104", "site-a", 5).unwrap()
        };
        let made = p(vec![notify(30, "SIP/2.0 200 OK")]);
        assert_eq!((made.refer_sent, made.told), (10, Told::Made(30)));
        assert_eq!((made.call.as_str(), made.parked.as_str()), ("c1", "1104"));
        assert_eq!(p(vec![notify(30, "SIP/2.0 486 Busy")]).told, Told::Refused);
        assert_eq!(p(vec![]).told, Told::Unknown);
        assert!(
            park(&[trying], 701, "1104", "site-a", 5).is_none(),
            "no REFER, no park"
        );
    }

    #[test]
    fn a_retrieve_counts_only_when_answered_and_kept_and_names_whom_it_got() {
        let invite = msg(1, Dir::Sent, Some("INVITE"), None, "r1");
        let mut ok = msg(3, Dir::Received, None, Some(200), "r1");
        ok.asserted_display = Some("701: 1104".into());
        let d = retrieve(&[invite.clone(), ok.clone()], 701, "3003").unwrap();
        assert_eq!(
            (d.asked, d.at, d.parked.as_deref()),
            (Some(1), 3, Some("1104"))
        );
        // Hung up by the other end before the phone did: not kept; by the phone: kept.
        let bye = msg(4, Dir::Received, Some("BYE"), None, "r1");
        assert!(retrieve(&[invite.clone(), ok.clone(), bye], 701, "3003").is_none());
        let own = msg(4, Dir::Sent, Some("BYE"), None, "r1");
        assert!(retrieve(&[invite.clone(), ok, own], 701, "3003").is_some());
        let busy = msg(3, Dir::Received, None, Some(486), "r1");
        assert!(retrieve(&[invite, busy], 701, "3003").is_none());
    }

    #[test]
    fn a_recall_counts_once_when_its_answer_was_taken() {
        let mut ring = msg(5, Dir::Received, Some("INVITE"), None, "x1");
        ring.from_display = Some("Recall 703: 2107".into());
        let ack = msg(6, Dir::Received, Some("ACK"), None, "x1");
        let again = ring.clone();
        let ds = recalls(&[ring.clone(), ack, again], "2002");
        assert_eq!(ds.len(), 1);
        assert_eq!((ds[0].slot, ds[0].parked.as_deref()), (703, Some("2107")));
        // Cancelled (never ACKed): no delivery.
        assert!(recalls(&[ring], "2002").is_empty());
    }
}
