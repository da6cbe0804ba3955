//! What a site or an edge may be called: shared by config checks, certificate identities and
//! the commands that name edges, so that an identity means the same everywhere.

/// Whether `s` may be a site's or an edge's name: a DNS label, lowercase (so that it can be a
/// Kubernetes name and a SPIFFE ID's path segment, and holds no `/` or `;`).
pub fn is_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `id` is an edge's identity: `site`, or `site/name`.
pub fn is_edge_id(id: &str) -> bool {
    match id.split_once('/') {
        Some((site, name)) => is_name(site) && is_name(name),
        None => is_name(id),
    }
}

/// Whether `addr` can be where an edge takes trunk requests: a unicast address and a port.
pub fn is_trunk_addr(addr: &std::net::SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_dns_labels_and_edge_ids_one_or_two_of_them() {
        for good in ["site-a", "a", "edge-2", "s1"] {
            assert!(is_name(good) && is_edge_id(good), "{good}");
        }
        for bad in [
            "",
            "Site-A",
            "-a",
            "a-",
            "a_b",
            "a;b",
            "a/b",
            "..",
            &"x".repeat(64),
        ] {
            assert!(!is_name(bad), "{bad}");
        }
        assert!(is_edge_id("site-a/edge-2"));
        for bad in ["site-a/", "/edge", "a/b/c", "A/b", "a/%2F"] {
            assert!(!is_edge_id(bad), "{bad}");
        }
        for (addr, ok) in [
            ("10.0.0.1:5060", true),
            ("127.0.0.1:5070", true),
            ("10.0.0.1:0", false),
            ("0.0.0.0:5060", false),
            ("[::]:5060", false),
            ("224.0.0.1:5060", false),
            ("255.255.255.255:5060", false),
        ] {
            assert_eq!(is_trunk_addr(&addr.parse().unwrap()), ok, "{addr}");
        }
    }
}
