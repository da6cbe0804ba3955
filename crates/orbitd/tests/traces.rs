//! Traces (issue 12): three processes (a site each: an edge and a registry voter) send their
//! spans over OTLP/gRPC to a real receiver in this test. A call parked at site A and retrieved
//! at site C, with the registry's leader at site B, is one trace: the park's command continues
//! on the leader (gRPC metadata), the retrieve at C continues the park's trace (the parked
//! call's record), C's claim continues on the leader, C's trunk INVITE continues at A (its
//! `traceparent` header), and every node's apply of each command joins it (the log entry).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// One span as received: which process sent it, and how it hangs in its trace.
#[derive(Debug, Clone)]
struct Got {
    process: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

/// An OTLP/gRPC trace receiver on a loopback port, keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

fn text(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .filter_map(|a| {
            let v = match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            Some((a.key.clone(), v))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
            let process = resource
                .get("service.instance.id")
                .cloned()
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Got {
                        process: process.clone(),
                        name: s.name,
                        trace: hex::encode(&s.trace_id),
                        id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        attrs: text(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serve on a free loopback port, on a runtime of its own thread.
    fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let svc = TraceServiceServer::new(r.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                    .await
                    .unwrap();
            });
        });
        (r, addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
}

fn leader(s: &Sites) -> u64 {
    let (code, out, err) = orbitctl_at(s.grpc[0], &s.admin_tls, &["cluster", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["leader_id"].as_u64().unwrap_or(0)
}

#[test]
fn a_park_at_a_and_its_retrieve_at_c_are_one_trace_across_three_processes() {
    // Quiet logs, as a busy deployment would run (only what the harness waits for): the
    // spans go to the collector whatever the log's filter keeps.
    std::env::set_var(
        "ORBIT_TEST_RUST_LOG",
        "warn,orbitd=info,orbit_edge::services::orbit_port=debug",
    );
    let (receiver, addr) = Receiver::start();
    let s = Sites::start_opts(
        &lot(90, 20),
        15,
        &format!("otlp_endpoint = \"http://{addr}\"\ntrace_sampling = 1.0"),
    );
    // The leader at site B, so that A, B and C each have their part.
    if leader(&s) != 2 {
        let (code, _, err) = orbitctl_at(s.grpc[0], &s.admin_tls, &["cluster", "transfer", "2"]);
        assert_eq!(code, 0, "{err}");
    }
    let t0 = Instant::now();
    while leader(&s) != 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "node 2 never led");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (alice, alice_media, alice_relay) = park_at_a(&s);
    let carol_media = RtpPeer::bind();
    let carol = Sipp::new(&s.site[2], "uac_call.xml")
        .args(["-s", "701", "-au", "3001", "-ap", "pw3001", "-d", "1000"])
        .key("caller", "3001")
        .key("rtpport", &carol_media.port().to_string())
        .spawn();
    let carol_relay = relay(carol.wait_log("relay_port", Duration::from_secs(10)));
    assert_bridged(
        (&alice_media, alice_relay),
        (&carol_media, carol_relay),
        20,
        Duration::from_millis(400),
    );
    let c = carol.wait();
    assert!(c.ok(), "retriever: {}", c.errors);
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);

    let (site_a, site_b, site_c) = (
        "site-a,registry-1",
        "site-b,registry-2",
        "site-c,registry-3",
    );
    // The retrieve at C, and the trace it is in (spans are sent each second).
    let t0 = Instant::now();
    let (trace, spans) = loop {
        let all = receiver.spans();
        let found = all
            .iter()
            .find(|g| g.name == "retrieve" && g.process == site_c)
            .map(|g| g.trace.clone());
        if let Some(trace) = found {
            let spans: Vec<Got> = all.into_iter().filter(|g| g.trace == trace).collect();
            // Whole once every span's parent has arrived but for one root's (the calls'
            // spans come as the calls end, with Carol's BYE).
            let ids: HashSet<&str> = spans.iter().map(|g| g.id.as_str()).collect();
            let roots = spans
                .iter()
                .filter(|g| !ids.contains(g.parent.as_str()))
                .count();
            if roots == 1 {
                break (trace, spans);
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no whole trace of the retrieve (one root, every parent there): {:#?}",
            receiver.spans()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let by_id: HashMap<&str, &Got> = spans.iter().map(|g| (g.id.as_str(), g)).collect();
    let processes: HashSet<&str> = spans.iter().map(|g| g.process.as_str()).collect();
    assert_eq!(
        processes,
        HashSet::from([site_a, site_b, site_c]),
        "trace {trace}"
    );
    // Whether `g` descends from a span of `process` named `name`.
    let descends = |g: &Got, process: &str, name: &str| {
        let mut at = by_id.get(g.parent.as_str());
        while let Some(p) = at {
            if p.process == process && p.name == name {
                return true;
            }
            at = by_id.get(p.parent.as_str());
        }
        false
    };
    let one = |process: &str, name: &str, kind: Option<&str>| -> &Got {
        spans
            .iter()
            .find(|g| {
                g.process == process
                    && g.name == name
                    && kind.is_none_or(|k| g.attrs.get("kind").map(String::as_str) == Some(k))
            })
            .unwrap_or_else(|| panic!("no {name} {kind:?} at {process}: {spans:#?}"))
    };
    // The park's command continues on the leader (gRPC metadata, perhaps through the node the
    // edge asked first).
    let park = one(site_b, "registry.propose", Some("park"));
    assert!(descends(park, site_a, "orbit.command"), "{spans:#?}");
    // The retrieve at C continues the park's trace: its parent is the parked call at A (the
    // parked call's record).
    let retrieve = one(site_c, "retrieve", None);
    assert_eq!(
        by_id[retrieve.parent.as_str()].process,
        site_a,
        "{spans:#?}"
    );
    assert_eq!(by_id[retrieve.parent.as_str()].name, "call", "{spans:#?}");
    // The claim continues on the leader.
    let claim = one(site_b, "registry.propose", Some("claim"));
    assert!(descends(claim, site_c, "retrieve"), "{spans:#?}");
    // The trunk INVITE continues at A (its traceparent header), below the retrieve.
    let trunk = one(site_a, "trunk.request", None);
    assert_eq!(by_id[trunk.parent.as_str()].process, site_c, "{spans:#?}");
    assert!(descends(trunk, site_c, "retrieve"), "{spans:#?}");
    // Every node applies the park and the claim in the trace (the log entry carries it).
    for p in [site_a, site_b, site_c] {
        let kinds: HashSet<&str> = spans
            .iter()
            .filter(|g| g.process == p && g.name == "registry.apply")
            .filter_map(|g| g.attrs.get("kind").map(String::as_str))
            .collect();
        assert!(
            kinds.contains("park") && kinds.contains("claim"),
            "{p} applied {kinds:?}"
        );
    }
}
