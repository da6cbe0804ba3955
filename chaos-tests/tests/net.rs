//! The hosts and the cuts between them, tried with real sockets: a cut stops UDP and TCP
//! the way it says (both ways or one), leaves the other hosts alone, and heals.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use orbit_chaos::net::{Net, Way};

/// A UDP socket at host `i`'s address.
fn udp(net: &Net, i: usize) -> UdpSocket {
    let addr = SocketAddr::from((net.hosts[i].addr, 0));
    net.within(i, move || {
        let s = UdpSocket::bind(addr).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    })
}

/// Whether a datagram from `a` reaches `b`.
fn reaches(a: &UdpSocket, b: &UdpSocket) -> bool {
    // A datagram dropped on its way out is refused to its sender (EPERM).
    if a.send_to(b"ping", b.local_addr().unwrap()).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(b.recv_from(&mut buf), Ok((4, from)) if from == a.local_addr().unwrap())
}

#[test]
fn cuts_stop_what_they_say_and_heal() {
    let net = Net::new(&["a", "b", "c"]).expect("hosts");
    let (a, b, c) = (udp(&net, 0), udp(&net, 1), udp(&net, 2));
    assert!(reaches(&a, &b) && reaches(&b, &a) && reaches(&a, &c));

    net.cut(1, &[0], Way::Both).unwrap();
    assert!(!reaches(&a, &b) && !reaches(&b, &a));
    // Only from the hosts named.
    assert!(reaches(&c, &b) && reaches(&b, &c) && reaches(&a, &c));
    net.heal(1).unwrap();
    assert!(reaches(&a, &b) && reaches(&b, &a));

    // One way: b hears nothing from a, a still hears b.
    net.cut(1, &[0], Way::Inbound).unwrap();
    assert!(!reaches(&a, &b) && reaches(&b, &a));
    net.heal(1).unwrap();
    net.cut(1, &[0], Way::Outbound).unwrap();
    assert!(reaches(&a, &b) && !reaches(&b, &a));
    net.heal(1).unwrap();
    // Healing what was never cut is no error.
    net.heal(2).unwrap();
}

#[test]
fn a_cut_stops_tcp_too_and_the_host_keeps_its_own_loopback() {
    let net = Net::new(&["a", "b"]).expect("hosts");
    let addr = SocketAddr::from((net.hosts[1].addr, 7000));
    let listener = net.within(1, move || TcpListener::bind(addr).expect("listen"));
    let connect = |net: &Net| {
        net.within(0, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
    };
    assert!(connect(&net));
    net.cut(0, &[1], Way::Both).unwrap();
    assert!(!connect(&net));
    // The host's own programs still talk to each other.
    let lo = net.within(1, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let mut s = TcpStream::connect(at).unwrap();
        s.write_all(b"x").unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let mut buf = [0u8; 1];
        peer.read_exact(&mut buf).unwrap();
        buf[0] == b'x'
    });
    assert!(lo);
    net.heal(0).unwrap();
    assert!(connect(&net));
    drop(listener);
}

#[test]
fn the_hosts_are_gone_when_the_run_is() {
    let names: Vec<String> = {
        let net = Net::new(&["a"]).expect("hosts");
        net.namespaces()
    };
    assert_eq!(names.len(), 2);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.contains(&n), "{n} left behind:\n{list}");
    }
}
