//! Our half of a dialog (RFC 3261 §12): its identity, CSeqs, route set, remote target, and the
//! flow it lives on.
//!
//! The flow is part of a dialog's identity here, not only where its requests go: a request
//! that names the dialog's Call-ID and tags acts on it only when it comes over the dialog's
//! flow (the same connection, or for UDP the same address). Call-IDs and tags travel in clear
//! text and show in lamp NOTIFYs; without this, anyone who learned them could hang up or
//! transfer someone else's call from anywhere.

use bytes::Bytes;

use crate::build::Local;
use crate::header::NameAddr;
use crate::message::{Message, Name, Writer};
use crate::transport::{Flow, Proto};

/// What a dialog is looked up by: its Call-ID and our tag.
pub type DialogId = (String, String);

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// Our From/To header value toward this party (with our tag).
    pub local_hdr: String,
    /// The party's header value (with its tag once known).
    pub remote_hdr: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Where this party is: requests go here, never to an address named in a message, and
    /// requests in the dialog are taken only from here.
    pub flow: Flow,
    /// User part of our Contact toward this party.
    pub contact_user: String,
    /// This party's user (its extension, or the user part of its address).
    pub user: String,
}

impl Dialog {
    /// Our side of a dialog a party's request creates (we are the UAS).
    pub fn uas(
        msg: &Message,
        flow: Flow,
        local_tag: &str,
        contact_user: &str,
        user: &str,
    ) -> Dialog {
        Dialog {
            call_id: msg.call_id().to_string(),
            local_tag: local_tag.to_string(),
            local_hdr: format!("{};tag={local_tag}", msg.header(Name::To).unwrap_or("")),
            remote_hdr: msg.header(Name::From).unwrap_or("").to_string(),
            remote_target: msg
                .values(Name::Contact)
                .next()
                .and_then(NameAddr::parse)
                .map(|c| c.uri.to_string())
                .or_else(|| msg.from().map(|f| f.uri.to_string()))
                .unwrap_or_default(),
            route_set: msg.values(Name::RecordRoute).map(str::to_string).collect(),
            local_cseq: 0,
            remote_cseq: msg.cseq.seq,
            flow,
            contact_user: contact_user.to_string(),
            user: user.to_string(),
        }
    }

    /// A dialog we start (we are the UAC): `local_hdr` is our From with our tag,
    /// `remote_hdr` the To; the rest is learnt from the 2xx ([`Dialog::establish`]).
    pub fn uac(
        call_id: String,
        local_tag: String,
        local_hdr: String,
        remote_hdr: String,
        flow: Flow,
        contact_user: &str,
        user: &str,
    ) -> Dialog {
        Dialog {
            call_id,
            local_tag,
            local_hdr,
            remote_hdr,
            remote_target: String::new(),
            route_set: vec![],
            local_cseq: 1,
            remote_cseq: 0,
            flow,
            contact_user: contact_user.to_string(),
            user: user.to_string(),
        }
    }

    /// The dialog a 2xx to our INVITE establishes, seen from our side (used to ACK and BYE a
    /// late answer we do not want).
    pub fn from_2xx(msg: &Message, flow: Flow) -> Dialog {
        let mut d = Dialog {
            call_id: msg.call_id().to_string(),
            local_tag: msg.from_tag().unwrap_or("").to_string(),
            local_hdr: msg.header(Name::From).unwrap_or("").to_string(),
            remote_hdr: String::new(),
            remote_target: String::new(),
            route_set: vec![],
            local_cseq: msg.cseq.seq,
            remote_cseq: 0,
            flow,
            contact_user: "orbit".into(),
            user: String::new(),
        };
        d.establish(msg, flow);
        d
    }

    pub fn id(&self) -> DialogId {
        (self.call_id.clone(), self.local_tag.clone())
    }

    /// Fill in a dialog we started (we are the UAC) from the 2xx that established it.
    pub fn establish(&mut self, msg: &Message, flow: Flow) {
        self.remote_hdr = msg.header(Name::To).unwrap_or("").to_string();
        self.remote_target = msg
            .values(Name::Contact)
            .next()
            .and_then(NameAddr::parse)
            .map(|c| c.uri.to_string())
            .unwrap_or_default();
        let mut rr: Vec<String> = msg.values(Name::RecordRoute).map(str::to_string).collect();
        rr.reverse();
        self.route_set = rr;
        self.flow = flow;
        self.remote_cseq = 0;
    }

    /// The party's tag.
    pub fn remote_tag(&self) -> Option<&str> {
        NameAddr::parse(&self.remote_hdr).and_then(|n| n.tag())
    }

    /// Whether a request that came over `flow` may act in this dialog: over the same
    /// connection, or for UDP from the same address.
    pub fn accepts(&self, flow: &Flow) -> bool {
        same_flow(&self.flow, flow)
    }

    /// Take the next CSeq for a request we send.
    pub fn next_cseq(&mut self) -> u32 {
        self.local_cseq += 1;
        self.local_cseq
    }

    /// A request in this dialog with CSeq `cseq`.
    pub fn request(
        &self,
        local: &Local,
        method: &str,
        cseq: u32,
        branch: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Bytes {
        let proto = self.flow.proto;
        let mut w = Writer::request(method, &self.remote_target);
        w.header("Via", &local.via(proto, branch));
        w.header("Max-Forwards", "70");
        w.header("From", &self.local_hdr);
        w.header("To", &self.remote_hdr);
        w.header("Call-ID", &self.call_id);
        w.header_parts("CSeq", &[&cseq.to_string(), " ", method]);
        for r in &self.route_set {
            w.header("Route", r);
        }
        // Ours, unless the caller gives another (a dialog handed to another edge names it).
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("Contact")) {
            w.header("Contact", &local.contact(&self.contact_user, proto));
        }
        for (k, v) in extra {
            w.header(k, v);
        }
        match body {
            Some((ct, b)) => w.finish(Some(ct), b),
            None => w.finish(None, b""),
        }
    }
}

/// Whether two flows are the same path to a party: the same connection (TCP, TLS), or the
/// same remote address (UDP).
pub fn same_flow(a: &Flow, b: &Flow) -> bool {
    a.proto == b.proto
        && match a.proto {
            Proto::Udp => a.addr == b.addr,
            Proto::Tcp | Proto::Tls => a.conn == b.conn,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(proto: Proto, addr: &str, conn: u64) -> Flow {
        Flow {
            proto,
            addr: addr.parse().unwrap(),
            conn,
        }
    }

    #[test]
    fn a_dialog_accepts_requests_only_over_its_own_flow() {
        let invite = crate::parse(
            Bytes::from_static(b"INVITE sip:2@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:1@x>;tag=f\r\nTo: <sip:2@x>\r\nCall-ID: c\r\nContact: <sip:1@10.0.0.1>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
            &Default::default(),
        )
        .unwrap();
        let d = Dialog::uas(&invite, flow(Proto::Udp, "10.0.0.1:5060", 0), "t", "2", "1");
        assert!(d.accepts(&flow(Proto::Udp, "10.0.0.1:5060", 0)));
        assert!(!d.accepts(&flow(Proto::Udp, "10.0.0.2:5060", 0)));
        assert!(!d.accepts(&flow(Proto::Udp, "10.0.0.1:5061", 0)));
        assert!(!d.accepts(&flow(Proto::Tcp, "10.0.0.1:5060", 3)));
        let t = Dialog {
            flow: flow(Proto::Tcp, "10.0.0.1:40000", 7),
            ..d.clone()
        };
        assert!(t.accepts(&flow(Proto::Tcp, "10.0.0.1:40000", 7)));
        // Another connection from the same address is another flow.
        assert!(!t.accepts(&flow(Proto::Tcp, "10.0.0.1:40000", 8)));
        assert_eq!(d.remote_tag(), Some("f"));
        assert_eq!(d.remote_target, "sip:1@10.0.0.1");
    }
}
