//! Metrics (issue 12): every process of a three-site cluster serves Prometheus text at its
//! `[telemetry] metrics_listen`; scraped during a SIPp call from site A to site B and parsed
//! by Prometheus's own Python client, the series say what happened.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The samples at `addr`, as Python's prometheus_client parses them.
fn scrape(addr: SocketAddr) -> Vec<Value> {
    let python = std::env::var("ORBIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/scrape_metrics.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scrape of {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn each_process_serves_metrics_that_follow_a_call_across_sites() {
    let s = Sites::start(&parking::lot(90, 20));
    let bob_media = RtpPeer::bind();
    let bob = s.site[1]
        .phone("2001", "uas_answer.xml", &bob_media)
        .args(["-d", "0"])
        .spawn();
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&s.site[0], "uac_call.xml")
        .args(["-s", "2001", "-au", "1001", "-ap", "pw1001", "-d", "3000"])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    let alice_relay = parking::relay(alice.wait_log("relay_port", Duration::from_secs(10)));
    let bob_relay = parking::relay(bob.wait_log("relay_port", Duration::from_secs(10)));
    // RTP both ways through relays A and B, and a stranger's packets at Alice's relay port.
    std::thread::sleep(Duration::from_millis(100));
    assert_bridged(
        (&alice_media, alice_relay),
        (&bob_media, bob_relay),
        50,
        Duration::from_millis(400),
    );
    let stranger = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..5 {
        stranger.send_to(&[0x80, 0, 0, 1], alice_relay).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    // Published once a second: during the call, site A holds it with its relay ports.
    let t0 = Instant::now();
    let a = loop {
        let a = scrape(s.metrics[0]);
        let calls = value(&a, "orbit_calls_active", &[("edge", "site-a")]);
        let ports = value(&a, "orbit_relay_ports_in_use", &[("edge", "site-a")]);
        if calls >= Some(1.0) && ports >= Some(2.0) {
            break a;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{a:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let invites = |x: &[Value], edge| {
        value(
            x,
            "orbit_sip_requests_total",
            &[("edge", edge), ("method", "INVITE")],
        )
    };
    // Counted once each, retransmissions apart: Alice's INVITE and its retry with credentials
    // at site A, the trunk's one INVITE at site B.
    assert_eq!(invites(&a, "site-a"), Some(2.0), "Alice's INVITEs");
    assert!(
        value(
            &a,
            "orbit_sip_responses_total",
            &[("edge", "site-a"), ("class", "4xx")]
        ) >= Some(1.0),
        "the challenge"
    );
    assert_eq!(
        value(&a, "orbit_edge_lease_held", &[("edge", "site-a")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &a,
            "orbit_parked_calls",
            &[("edge", "site-a"), ("lot", "700")]
        ),
        Some(0.0)
    );
    let b = scrape(s.metrics[1]);
    assert_eq!(invites(&b, "site-b"), Some(1.0), "the trunk's INVITE at B");
    // Published once a second: wait for the relay's counts at A (50 each way, and the stranger's).
    let t0 = Instant::now();
    let a = loop {
        let a = scrape(s.metrics[0]);
        let rtp = |o| {
            value(
                &a,
                "orbit_rtp_packets_total",
                &[("edge", "site-a"), ("outcome", o)],
            )
        };
        if rtp("forwarded") >= Some(100.0) && rtp("dropped") >= Some(5.0) {
            break a;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{a:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let dropped = [("edge", "site-a"), ("outcome", "dropped")];
    assert_eq!(
        value(&a, "orbit_rtp_packets_total", &dropped),
        Some(5.0),
        "the stranger's only"
    );
    assert!(value(&b, "orbit_registrations", &[("edge", "site-b")]) >= Some(1.0));
    assert!(
        value(
            &b,
            "orbit_sip_responses_total",
            &[("edge", "site-b"), ("class", "2xx")]
        ) >= Some(1.0)
    );
    // The registry: every node has a term, exactly one leads, the leader's entries have a
    // commit latency.
    let mut leaders = 0.0;
    let mut commits = 0.0;
    for (i, m) in s.metrics.iter().enumerate() {
        let x = if i == 0 { a.clone() } else { scrape(*m) };
        let node = (i + 1).to_string();
        assert!(
            value(&x, "orbit_registry_term", &[("node", &node)]) >= Some(1.0),
            "{x:#?}"
        );
        assert!(value(&x, "orbit_registry_applied_index", &[("node", &node)]) > Some(0.0));
        leaders += value(&x, "orbit_registry_is_leader", &[("node", &node)]).unwrap_or(0.0);
        let here = value(&x, "orbit_registry_commit_seconds_count", &[]).unwrap_or(0.0);
        if here > 0.0 {
            let le = |b: &str| value(&x, "orbit_registry_commit_seconds_bucket", &[("le", b)]);
            assert!(
                le("+Inf") == Some(here) && le("0.1").is_some(),
                "a histogram: {x:#?}"
            );
        }
        commits += here;
    }
    assert_eq!(leaders, 1.0, "one leader");
    assert!(commits > 0.0, "the leader timed its entries");
    let r = alice.wait();
    assert!(r.ok(), "caller: {}", r.errors);
    let _ = bob.wait();
    let t0 = Instant::now();
    while value(
        &scrape(s.metrics[0]),
        "orbit_calls_total",
        &[("edge", "site-a"), ("outcome", "answered")],
    ) < Some(1.0)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the answered call counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let a = scrape(s.metrics[0]);
    let answered = [("edge", "site-a"), ("outcome", "answered")];
    assert_eq!(
        value(&a, "orbit_calls_total", &answered),
        Some(1.0),
        "counted once"
    );
    // A park at site A: counted once, its wait for the registry timed, the lot's gauge up.
    let (_alice, _media, _relay) = parking::park_at_a(&s);
    let park = [("edge", "site-a"), ("feature", "park")];
    let t0 = Instant::now();
    let a = loop {
        let a = scrape(s.metrics[0]);
        if value(&a, "orbit_feature_seconds_count", &park) == Some(1.0) {
            break a;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{a:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(value(&a, "orbit_features_total", &park), Some(1.0));
    let lot = [("edge", "site-a"), ("lot", "700")];
    assert_eq!(value(&a, "orbit_parked_calls", &lot), Some(1.0));
    let inf = [("edge", "site-a"), ("feature", "park"), ("le", "+Inf")];
    assert_eq!(value(&a, "orbit_feature_seconds_bucket", &inf), Some(1.0));
    // Alice hears the lot's music: one stream at site A, its packets counted.
    let t0 = Instant::now();
    loop {
        let a = scrape(s.metrics[0]);
        let streams = value(&a, "orbit_music_streams", &[("edge", "site-a")]);
        let played = value(&a, "orbit_music_packets_total", &[("edge", "site-a")]);
        if streams == Some(1.0) && played > Some(0.0) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{a:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every series the Grafana dashboard charts exists.
    let all: Vec<Value> = s.metrics.iter().flat_map(|m| scrape(*m)).collect();
    let dashboard = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/orbit.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut charted = 0;
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("orbit_"))
            {
                charted += 1;
                assert!(
                    all.iter().any(|s| s["name"] == name),
                    "panel {:?} charts {name}, which no process serves",
                    p["title"]
                );
            }
        }
    }
    assert!(charted >= 15, "{charted}");
}

#[test]
fn a_scraper_outside_metrics_allow_is_refused() {
    let dir = std::env::temp_dir().join(format!("orbit-metrics-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (grpc, metrics) = (free_port(), free_port());
    let cfg = dir.join("orbit.toml");
    std::fs::write(
        &cfg,
        format!(
            "[registry]\nid = 1\nlisten = \"127.0.0.1:{grpc}\"\ndata_dir = \"{}\"\n[telemetry]\nmetrics_listen = \"127.0.0.1:{metrics}\"\nmetrics_allow = [\"127.0.0.1/32\"]\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The status a GET of /metrics gets from `source` (the exporter's allow-list looks at it).
    let status_from = |source: &str| {
        let python = std::env::var("ORBIT_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = format!(
            "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {metrics}, timeout=5, source_address=('{source}', 0))\nc.request('GET', '/metrics')\nprint(c.getresponse().status)"
        );
        let out = std::process::Command::new(python)
            .args(["-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let t0 = Instant::now();
    while status_from("127.0.0.1") != "200" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "metrics never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another loopback address is a stranger to the allow-list.
    assert_eq!(status_from("127.0.0.2"), "403");
    let _ = node.kill();
    let _ = node.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
