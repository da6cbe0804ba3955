//! Parking across sites, as the multi-site tests start it: a lot, Alice (1001) at site A answering
//! Bob (1002), who parks her in 700.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Daemon, RtpPeer, RunningSipp, Sipp, Sites};

/// The port of a relay address as SIPp logs it.
pub fn relay(s: String) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.parse::<u16>().expect("port")))
}

/// Lot 700 (701-720) with these parking and recall ring times.
pub fn lot(parking: u64, ring: u64) -> String {
    format!(
        "[[edge.tenant.lots]]\npark_ext = \"700\"\nslots = \"701-720\"\nparking_secs = {parking}\nrecall_ring_secs = {ring}\n"
    )
}

/// Alice (1001) registered at `site`, answering with media on `media`.
pub fn alice(site: &Daemon, media: &RtpPeer) -> RunningSipp {
    site.phone("1001", "uas_answer.xml", media)
        .args(["-d", "0"])
        .spawn()
}

/// Bob (1002) calls Alice through `site` and transfers her to 700.
pub fn bob_parks(site: &Daemon) -> RunningSipp {
    bob_parks_in(site, "700")
}

/// Bob (1002) calls Alice through `site` and transfers her to lot `lot`.
pub fn bob_parks_in(site: &Daemon, lot: &str) -> RunningSipp {
    let media = RtpPeer::bind();
    Sipp::new(site, "uac_park.xml")
        .args(["-s", "1001", "-au", "1002", "-ap", "pw1002", "-d", "300"])
        .key("caller", "1002")
        .key("rtpport", &media.port().to_string())
        .key("park_to", lot)
        .key("refer_params", "")
        .spawn()
}

/// Park Alice at site A; returns her phone, her media and the relay port she talks to.
pub fn park_at_a(s: &Sites) -> (RunningSipp, RtpPeer, SocketAddr) {
    let media = RtpPeer::bind();
    let a = alice(&s.site[0], &media);
    let bob = bob_parks(&s.site[0]);
    let relay_a = relay(a.wait_log("relay_port", Duration::from_secs(10)));
    let b = bob.wait();
    assert!(b.ok(), "parker: {}", b.errors);
    assert!(b.logs.contains("sipfrag=200"), "{}", b.logs);
    (a, media, relay_a)
}

/// Extension `parked` registered at `site` answers `parker`'s call, and is parked in 700 by
/// it: the parked party's phone (it takes a re-INVITE if its call is moved), its media, and
/// the relay it talks to (at the edge's address).
pub fn parked_at(site: &Daemon, parked: &str, parker: &str) -> (RunningSipp, RtpPeer, SocketAddr) {
    let media = RtpPeer::bind_on(site.local);
    let phone = site
        .phone(parked, "uas_answer_moved.xml", &media)
        .args(["-d", "0"])
        .spawn();
    let bob = Sipp::new(site, "uac_park.xml")
        .args([
            "-s",
            parked,
            "-au",
            parker,
            "-ap",
            &format!("pw{parker}"),
            "-d",
            "300",
        ])
        .key("caller", parker)
        .key("rtpport", &RtpPeer::bind_on(site.local).port().to_string())
        .key("park_to", "700")
        .key("refer_params", "")
        .spawn();
    let port = phone.wait_log("relay_port", Duration::from_secs(10));
    let r = SocketAddr::new(site.sip.ip(), port.parse().expect("port"));
    let b = bob.wait();
    assert!(b.ok(), "parker {parker}: {}", b.errors);
    assert!(b.logs.contains("sipfrag=200"), "{}", b.logs);
    (phone, media, r)
}
