//! Where each registry node serves operators (`[registry] admin_listen`), so that a client
//! that asked any node can find the leader's admin listener (membership changes and leadership
//! transfers are the leader's). Each node says its own at start; at most [`MAX_NODES`].

use crate::{Event, Orbit, Rejection};

/// Registry nodes whose admin address the state keeps.
pub const MAX_NODES: usize = 64;

/// `host:port`, a host of letters, digits, `.`, `-`, `:` (IPv6 in brackets) and a port.
pub fn is_host_port(addr: &str) -> bool {
    addr.len() <= 255
        && addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
}

impl Orbit {
    /// `NodeAdmin`: node `node` serves operators at `addr` (None: on its peer address).
    pub(crate) fn set_node_admin(
        &mut self,
        node: u64,
        addr: Option<&str>,
    ) -> Result<Event, Rejection> {
        match addr {
            Some(a) if !is_host_port(a) => return Err(Rejection::BadAddress(a.to_string())),
            Some(a) => {
                let full =
                    !self.node_admins.contains_key(&node) && self.node_admins.len() >= MAX_NODES;
                if node == 0 || full {
                    return Err(Rejection::OutOfRange {
                        what: "registry nodes with an admin address (or node id 0)".into(),
                        value: node,
                        max: MAX_NODES as u64,
                    });
                }
                self.node_admins.insert(node, a.to_string());
            }
            None => {
                self.node_admins.remove(&node);
            }
        }
        Ok(Event::NodeAdminSet { node })
    }

    /// Where node `node` serves operators, if it said (else on its peer address).
    pub fn node_admin(&self, node: u64) -> Option<&str> {
        self.node_admins.get(&node).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn say(node: u64, addr: Option<&str>) -> Command {
        Command::NodeAdmin {
            node,
            addr: addr.map(String::from),
        }
    }

    #[test]
    fn a_node_says_where_it_serves_operators_and_strangers_grow_nothing() {
        let mut o = Orbit::new();
        o.apply(0, &say(1, Some("10.9.0.1:50053"))).unwrap();
        o.apply(0, &say(2, Some("[::1]:50053"))).unwrap();
        o.apply(0, &say(3, Some("registry-2.orbit.svc:50053")))
            .unwrap();
        assert_eq!(o.node_admin(1), Some("10.9.0.1:50053"));
        for bad in ["nowhere", "a b:1", "h:0", ":80", "h:99999"] {
            assert!(o.apply(0, &say(4, Some(bad))).is_err(), "{bad}");
        }
        assert!(
            o.apply(0, &say(0, Some("h:1"))).is_err(),
            "node ids start at 1"
        );
        o.apply(0, &say(1, None)).unwrap();
        assert_eq!(o.node_admin(1), None);
        for n in 10..10 + MAX_NODES as u64 - 2 {
            o.apply(0, &say(n, Some("h:1"))).unwrap();
        }
        assert!(o.apply(0, &say(999, Some("h:1"))).is_err(), "bounded");
        let back: Orbit = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back.node_admin(2), Some("[::1]:50053"));
        assert_eq!(
            o.proposer(&say(1, None)),
            crate::Proposer::Registry,
            "no edge's to say"
        );
    }
}
