//! Transaction keys (RFC 3261 §17.1.3, §17.2.3) as types, not strings joined with a separator.
//!
//! A server transaction is matched on the top Via's branch and sent-by and the method (ACK
//! matching INVITE), narrowed here to the source the request came from: a request that borrows
//! another party's branch from elsewhere is a new transaction of its own, never taken for that
//! party's retransmission (nor answered with its response). Requests from RFC 2543 peers (no
//! magic cookie) are matched on Call-ID, From tag and CSeq instead.
//!
//! A client transaction is matched on the branch we put in our Via, and CANCEL on the same
//! branch as the INVITE it cancels (so the key says which of the two it is).

use std::net::SocketAddr;

use crate::message::Message;
use crate::Method;

/// What identifies a request's transaction, before the source narrows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxId {
    /// RFC 3261: branch (with the `z9hG4bK` cookie) and sent-by of the top Via.
    Branch {
        branch: Box<str>,
        host: Box<str>,
        port: u16,
    },
    /// RFC 2543 peers: the request's identity.
    Legacy {
        call_id: Box<str>,
        from_tag: Box<str>,
        cseq: u32,
    },
}

/// The key of a server transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub id: TxId,
    /// The request's method; ACK is keyed as INVITE (it belongs to the INVITE transaction).
    pub method: Method,
    /// Where the request came from.
    pub source: SocketAddr,
}

impl ServerKey {
    /// The key of request `msg` received from `source`.
    pub fn of(msg: &Message, source: SocketAddr) -> ServerKey {
        let method = match msg.method() {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let via = msg.top_via();
        let id = match via.as_ref().and_then(|v| v.branch().map(|b| (v, b))) {
            Some((v, b)) if b.starts_with("z9hG4bK") => {
                let (host, port) = v.sent_by();
                TxId::Branch {
                    branch: b.into(),
                    host: host.into(),
                    port,
                }
            }
            _ => TxId::Legacy {
                call_id: msg.call_id().into(),
                from_tag: msg.from_tag().unwrap_or("").into(),
                cseq: msg.cseq.seq,
            },
        };
        ServerKey { id, method, source }
    }

    /// The INVITE transaction a CANCEL with this key cancels (same branch, sent-by and
    /// source, RFC 3261 §9.2).
    pub fn cancelled_invite(&self) -> ServerKey {
        ServerKey {
            method: Method::Invite,
            ..self.clone()
        }
    }
}

/// The key of a client transaction: the branch of our Via, and whether it is the CANCEL sent
/// on that branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    pub branch: Box<str>,
    pub cancel: bool,
}

impl ClientKey {
    pub fn new(branch: &str) -> ClientKey {
        ClientKey {
            branch: branch.into(),
            cancel: false,
        }
    }

    /// The key of the CANCEL for the INVITE with this key.
    pub fn cancel(&self) -> ClientKey {
        ClientKey {
            branch: self.branch.clone(),
            cancel: true,
        }
    }

    /// The client transaction response `msg` belongs to, if it has a branch.
    pub fn of_response(msg: &Message) -> Option<ClientKey> {
        let branch = msg.top_via()?.branch()?.into();
        Some(ClientKey {
            branch,
            cancel: *msg.method() == Method::Cancel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Limits;

    fn msg(s: &str) -> Message {
        crate::parse(
            bytes::Bytes::from(s.replace('\n', "\r\n").into_bytes()),
            &Limits::default(),
        )
        .unwrap()
    }

    fn req(method: &str, branch: &str) -> Message {
        msg(&format!(
            "{method} sip:1@x SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\nFrom: <sip:a@x>;tag=f\nTo: <sip:b@x>\nCall-ID: c1\nCSeq: 1 {method}\nContent-Length: 0\n\n"
        ))
    }

    #[test]
    fn ack_and_cancel_find_their_invite_and_sources_are_kept_apart() {
        let src: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let invite = ServerKey::of(&req("INVITE", "z9hG4bKx"), src);
        assert_eq!(ServerKey::of(&req("ACK", "z9hG4bKx"), src), invite);
        let cancel = ServerKey::of(&req("CANCEL", "z9hG4bKx"), src);
        assert_ne!(cancel, invite);
        assert_eq!(cancel.cancelled_invite(), invite);
        // The same branch from another source is another transaction.
        assert_ne!(ServerKey::of(&req("INVITE", "z9hG4bKx"), other), invite);
        // RFC 2543: no cookie, matched on the request's identity.
        let old = ServerKey::of(&req("INVITE", "abc"), src);
        assert!(matches!(old.id, TxId::Legacy { cseq: 1, .. }));
    }

    #[test]
    fn a_cancel_response_is_keyed_apart_from_the_invite_response() {
        let r = |m: &str| {
            msg(&format!(
                "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKq\nFrom: <sip:a@x>;tag=f\nTo: <sip:b@x>;tag=t\nCall-ID: c1\nCSeq: 1 {m}\nContent-Length: 0\n\n"
            ))
        };
        let inv = ClientKey::of_response(&r("INVITE")).unwrap();
        assert_eq!(inv, ClientKey::new("z9hG4bKq"));
        assert_eq!(ClientKey::of_response(&r("CANCEL")).unwrap(), inv.cancel());
    }
}
