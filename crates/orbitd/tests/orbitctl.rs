//! `orbitctl` end to end against three `orbitd run` processes over mutual TLS: the cluster's
//! status, a park at site A listed and watched from site C's node until its retrieve at site C;
//! and what strangers get (no certificate, another CA's, half the TLS flags, nobody there).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// `orbitctl <args>` at registry node `node` with `tls` flags: (exit code, stdout, stderr).
fn orbitctl(s: &Sites, node: usize, tls: &[String], args: &[&str]) -> (i32, String, String) {
    orbitctl_at(s.grpc[node], tls, args)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn orbitctl_shows_the_cluster_and_follows_a_park_at_site_a_and_its_retrieve_at_site_c() {
    let s = Sites::start(&lot(90, 20));
    let admin = s.admin_tls.clone();
    let (code, out, err) = orbitctl(&s, 1, &admin, &["cluster", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_ne!(st["leader_id"], 0, "{st}");
    let members = st["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{st}");
    assert!(members.iter().all(|m| m["voter"] == true), "{st}");
    let edges: Vec<&str> = st["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(edges, SITE_NAMES, "{st}");
    let (code, table, err) = orbitctl(&s, 1, &admin, &["cluster", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("leader") && table.contains("site-c"),
        "{table}"
    );

    // A watcher at site C's node, from before the park.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args(["--endpoint", &s.grpc[2].to_string(), "--json"])
        .args(&admin)
        .args(["parked", "list", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("the list");
    assert_eq!(json(&first), json("[]"), "nothing parked yet");

    let (alice, _media, _relay) = park_at_a(&s);
    let (code, out, err) = orbitctl(&s, 2, &admin, &["parked", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list = json(&out);
    let calls = list.as_array().unwrap();
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["slot"], 701);
    assert_eq!(calls[0]["edge"], "site-a");
    assert_eq!(calls[0]["parker"], "1002");
    assert_eq!(calls[0]["phase"], "waiting");
    let deadline = calls[0]["deadline_ms"].as_u64().unwrap();
    let parked_at = calls[0]["parked_at_ms"].as_u64().unwrap();
    assert_eq!(deadline - parked_at, 90_000, "{list}");
    let (code, table, _) = orbitctl(&s, 0, &admin, &["parked", "list"]);
    assert_eq!(code, 0);
    assert!(table.contains("701") && table.contains("site-a"), "{table}");

    // Carol (3001) at site C retrieves it.
    let carol_media = RtpPeer::bind();
    let carol = Sipp::new(&s.site[2], "uac_call.xml")
        .args(["-s", "701", "-au", "3001", "-ap", "pw3001", "-d", "500"])
        .key("caller", "3001")
        .key("rtpport", &carol_media.port().to_string())
        .spawn();
    assert!(carol.wait().ok());
    let mut kinds = vec![];
    while kinds.len() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("watch saw only {kinds:?}"));
        let ev = json(&line);
        assert_eq!(ev["call"]["slot"], 701, "{ev}");
        kinds.push((
            ev["kind"].as_str().unwrap().to_string(),
            ev["detail"].clone(),
        ));
    }
    assert_eq!(kinds[0].0, "parked", "{kinds:?}");
    // By whom: the retriever, at the edge whose claim it was.
    assert_eq!(
        kinds[1],
        ("retrieved".to_string(), Value::from("site-c/3001")),
        "{kinds:?}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(alice.wait().ok());
    let (_, out, _) = orbitctl(&s, 1, &admin, &["parked", "list", "--json"]);
    assert_eq!(json(&out), json("[]"));
}

#[test]
fn orbitctl_tells_strangers_no_with_an_exit_code_that_says_why() {
    let s = Sites::start(&lot(90, 20));
    // No certificate: plaintext against a TLS node.
    let (code, _, err) = orbitctl(&s, 0, &[], &["cluster", "status"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&s.grpc[0].to_string()),
        "names the node: {err}"
    );
    // An admin's certificate from a CA of the stranger's own.
    let dir = s.pki.join("stranger");
    let other = orbit_registry::dev_pki::DevCa::new().unwrap();
    let f = other
        .write(
            &dir,
            "mallory",
            &orbit_registry::Caller::Admin("mallory".into()),
            &[],
        )
        .unwrap();
    let flags = |f: &orbit_registry::TlsFiles| -> Vec<String> {
        [
            ("--ca", &s.admin_tls[1]),
            ("--cert", &f.cert.display().to_string()),
            ("--key", &f.key.display().to_string()),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    };
    let (code, out, err) = orbitctl(&s, 0, &flags(&f), &["parked", "list"]);
    assert_eq!(code, 3, "refused at the handshake: {out} {err}");
    // Half the TLS flags: a usage error.
    let (code, _, err) = orbitctl(&s, 0, &s.admin_tls[..2], &["cluster", "status"]);
    assert_eq!(code, 2, "{err}");
    // A reader of the cluster's own reads.
    let reader = s.reader_tls("grafana");
    for args in [
        &["parked", "list"][..],
        &["pickup", "list"][..],
        &["lots", "get", "--tenant", "orbit.local", "700"][..],
    ] {
        let (code, _, err) = orbitctl(&s, 0, &reader, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let get = ["lots", "get", "--tenant", "orbit.local", "999"];
    let (code, _, err) = orbitctl(&s, 0, &reader, &get);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("no lot 999 in orbit.local"), "{err}");
    // ... and no more: it changes neither the membership nor anything else.
    for args in [
        &["cluster", "snapshot"][..],
        &["cluster", "remove", "3"][..],
        &["cluster", "add", "7", "127.0.0.1:1"][..],
        &["edge", "drain", "site-a"][..],
        &["parked", "send", "1", "1001"][..],
        &[
            "pickup",
            "set",
            "--tenant",
            "orbit.local",
            "g",
            "--members",
            "1001",
        ][..],
        &["pickup", "delete", "--tenant", "orbit.local", "g"][..],
        &["lots", "delete", "--tenant", "orbit.local", "700"][..],
    ] {
        let (code, _, err) = orbitctl(&s, 0, &reader, args);
        assert_eq!(code, 4, "{args:?}: {err}");
    }
    // Scripts with a bearer token (and the CA, no certificate): a reader's reads and may not
    // change anything; an admin's may; a token that is nobody's is refused.
    let ca = [
        "--ca".to_string(),
        s.pki.join("ca.pem").display().to_string(),
    ];
    let with = |token: &str| [&ca[..], &["--token".to_string(), token.to_string()]].concat();
    let (code, _, err) = orbitctl(&s, 0, &with(READ_TOKEN), &["parked", "list"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = orbitctl(&s, 0, &with(READ_TOKEN), &["cluster", "snapshot"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("read/reports"),
        "the token's name is the caller's: {err}"
    );
    let (code, _, err) = orbitctl(&s, 0, &with(ADMIN_TOKEN), &["cluster", "snapshot"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = orbitctl(&s, 0, &with("not-a-token-of-ours"), &["parked", "list"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unknown bearer token"), "{err}");
    // A token is for the admin API: it does not stand for a node or an edge elsewhere.
    let (code, _, _) = orbitctl(&s, 0, &ca, &["parked", "list"]);
    assert_eq!(code, 2, "--ca alone is half the flags");
    // Nobody listening.
    let out = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args(["--endpoint", "127.0.0.1:1", "--timeout", "2"])
        .args(&s.admin_tls)
        .args(["cluster", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("orbitctl: 127.0.0.1:1: "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn a_grpc_client_that_is_not_ours_finds_the_services_by_reflection_and_reads_the_parked_calls() {
    // The test command's venv (scripts/test.sh), else whatever python3 there is.
    let python = std::env::var("ORBIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_reflection"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        probe,
        "Python grpcio and grpcio-reflection are needed: run ./scripts/test.sh, which installs them"
    );
    let s = Sites::start(&lot(90, 20));
    let (alice, _media, _relay) = park_at_a(&s);
    let reader =
        s.ca.write(
            &s.pki,
            "python",
            &orbit_registry::Caller::Reader("python".into()),
            &[],
        )
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/reflection_client.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(s.grpc[1].to_string())
        .args([&reader.ca, &reader.cert, &reader.key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&stdout);
    let services: Vec<&str> = r["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "orbit.admin.v1.Admin",
        "grpc.health.v1.Health",
        "orbit.registry.v1.Registry",
    ] {
        assert!(services.contains(&want), "{want} in {services:?}");
    }
    assert_eq!(r["health"], "SERVING", "{r}");
    let calls = r["parked"]["calls"].as_array().expect("one call");
    assert_eq!(calls.len(), 1, "{r}");
    assert_eq!(calls[0]["slot"], 701, "{r}");
    assert_eq!(calls[0]["edge"], "site-a", "{r}");
    drop(alice);
}

#[test]
fn orbitctl_manages_lots_through_the_registry_and_every_site_parks_in_them() {
    let mut s = Sites::start(&lot(90, 20));
    let admin = s.admin_tls.clone();
    let tenant = ["--tenant", "orbit.local"];
    let lots = |s: &Sites| {
        let (code, out, err) = orbitctl(s, 1, &admin, &["lots", "list", "--json"]);
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    let l = lots(&s);
    assert_eq!(
        l[0]["park_ext"], "700",
        "seeded from the sites' config: {l}"
    );
    assert_eq!(
        (l[0]["first_slot"].clone(), l[0]["parking_secs"].clone()),
        (701.into(), 90.into())
    );

    // A reader may look, not change.
    let reader_tls = s.reader_tls("viewer");
    let set = |slots: &str| {
        let mut a = vec![
            "lots",
            "set",
            "800",
            "--slots",
            slots,
            "--parking-secs",
            "60",
        ];
        a.extend(tenant);
        a.into_iter().map(String::from).collect::<Vec<String>>()
    };

    let (code, _, err) = orbitctl(&s, 0, &reader_tls, &args(&set("801-805")));
    assert_eq!(code, 4, "{err}");
    // Bad input names the field; slots over another lot's are refused.
    let (code, _, err) = orbitctl(&s, 0, &admin, &args(&set("810-801")));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("lot.first_slot"), "{err}");
    let (code, _, err) = orbitctl(&s, 0, &admin, &args(&set("715-725")));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("overlap"), "{err}");
    // A fallback the tenant has no extension for (the edges told the registry which it has).
    let mut nowhere = set("801-805");
    nowhere.extend(["--fallback".to_string(), "9999".to_string()]);
    let (code, _, err) = orbitctl(&s, 0, &admin, &args(&nowhere));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("lot.fallback: no extension 9999"), "{err}");
    let (code, _, err) = orbitctl(&s, 0, &admin, &args(&set("801-805")));
    assert_eq!(code, 0, "{err}");

    // Site B, whose config knows nothing of lot 800, parks in it.
    let media = RtpPeer::bind();
    let alice = alice(&s.site[1], &media);
    let bob = bob_parks_in(&s.site[1], "800");
    let b = bob.wait();
    assert!(
        b.ok() && b.logs.contains("sipfrag=200"),
        "{} {}",
        b.errors,
        b.logs
    );
    let (_, out, _) = orbitctl(&s, 2, &admin, &["parked", "list", "--json"]);
    let parked = json(&out);
    assert_eq!(parked[0]["lot"], "800", "{parked}");
    assert_eq!(parked[0]["slot"], 801, "{parked}");
    assert_eq!(parked[0]["edge"], "site-b", "{parked}");
    let p = &parked[0];
    assert_eq!(
        p["deadline_ms"].as_u64().unwrap() - p["parked_at_ms"].as_u64().unwrap(),
        60_000
    );
    // Not while a call is parked in it; nor a lot there is none of.
    let mut del = vec!["lots", "delete", "800"];
    del.extend(tenant);
    let (code, _, err) = orbitctl(&s, 0, &admin, &del);
    assert_eq!(code, 6, "{err}");
    let mut none = vec!["lots", "delete", "900"];
    none.extend(tenant);
    let (code, _, err) = orbitctl(&s, 0, &admin, &none);
    assert_eq!(code, 5, "{err}");
    drop(alice);

    // An admin's change outlives a site's restart: its config only seeds where there is none.
    let mut longer = vec![
        "lots",
        "set",
        "700",
        "--slots",
        "701-720",
        "--parking-secs",
        "30",
    ];
    longer.extend(tenant);
    let (code, _, err) = orbitctl(&s, 0, &admin, &longer);
    assert_eq!(code, 0, "{err}");
    s.kill(0);
    s.spawn(0);
    // Its config's lot 700 seeded again (and left as the admin made it).
    s.wait_log(0, "committed event=lot 700 set", Duration::from_secs(20));
    let l = lots(&s);
    let seven = l
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["park_ext"] == "700")
        .unwrap();
    assert_eq!(seven["parking_secs"], 30, "{l}");
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn an_operator_extends_then_hangs_up_a_parked_call_and_its_caller_gets_bye_at_the_site_holding_it()
{
    // Leases of 3 s, renewed every second: each renewal says what the edge holds.
    let s = Sites::start_with(&lot(90, 20), 3);
    let admin = s.admin_tls.clone();
    let (alice, _media, _relay) = park_at_a(&s);
    // Site A's edge holds Alice's parked call and its relay ports, as the status shows.
    let t0 = std::time::Instant::now();
    loop {
        let (_, out, _) = orbitctl(&s, 1, &admin, &["cluster", "status", "--json"]);
        let st = json(&out);
        let a = &st["edges"][0];
        assert_eq!(a["name"], "site-a", "{st}");
        if a["calls"] == 1 && a["relay_ports"].as_u64() >= Some(2) {
            assert_eq!(a["parked_calls"], 1, "{st}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, out, _) = orbitctl(&s, 2, &admin, &["parked", "list", "--json"]);
    let id = json(&out)[0]["park_id"]
        .as_u64()
        .expect("parked")
        .to_string();
    // A reader may not; an admin, at site C's node, may.
    let reader_tls = s.reader_tls("viewer");
    let (code, _, err) = orbitctl(&s, 2, &reader_tls, &["parked", "hangup", &id]);
    assert_eq!(code, 4, "{err}");
    // Its deadline pushed 30 s later first, as every node then shows it.
    let deadline = |s: &Sites, node| {
        let (_, out, _) = orbitctl(s, node, &admin, &["parked", "list", "--json"]);
        json(&out)[0]["deadline_ms"].as_u64().unwrap()
    };
    let before = deadline(&s, 0);
    let (code, _, err) = orbitctl(
        &s,
        2,
        &reader_tls,
        &["parked", "extend", &id, "--secs", "30"],
    );
    assert_eq!(code, 4, "{err}");
    // With a request id, and again with the same (an answer lost, a script retrying): once.
    let extend = [
        "parked",
        "extend",
        id.as_str(),
        "--secs",
        "30",
        "--json",
        "--request-id",
        "push-1",
    ];
    for node in [2, 1] {
        let (code, out, err) = orbitctl(&s, node, &admin, &extend);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)[0]["deadline_ms"], before + 30_000, "{out}");
    }
    let (code, _, err) = orbitctl(
        &s,
        2,
        &admin,
        &["parked", "hangup", &id, "--request-id", "a b"],
    );
    assert_eq!(code, 5, "a request id that cannot be one: {err}");
    let t0 = std::time::Instant::now();
    while deadline(&s, 0) != before + 30_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "site A's node never showed it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, err) = orbitctl(&s, 2, &admin, &["parked", "hangup", &id]);
    assert_eq!(code, 0, "{err}");
    // Alice's phone at site A is sent BYE (her scenario ends with it).
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    let (_, out, _) = orbitctl(&s, 0, &admin, &["parked", "list", "--json"]);
    assert_eq!(json(&out), json("[]"));
    // Again: nothing of that id is parked any more.
    let (code, _, err) = orbitctl(&s, 2, &admin, &["parked", "hangup", &id]);
    assert_eq!(code, 5, "{err}");
    assert!(
        s.log(0).contains("parked call hung up by an operator"),
        "{}",
        s.log(0)
    );
}

#[test]
fn an_operator_sends_a_parked_call_to_a_desk_at_site_c_which_answers_with_media_both_ways() {
    let s = Sites::start(&lot(90, 20));
    let admin = s.admin_tls.clone();
    let (alice, alice_media, alice_relay) = park_at_a(&s);
    let (_, out, _) = orbitctl(&s, 1, &admin, &["parked", "list", "--json"]);
    let id = json(&out)[0]["park_id"]
        .as_u64()
        .expect("parked")
        .to_string();
    // An extension the tenant does not have, one that cannot be one, a reader: refused.
    for (tls, ext, want, says) in [
        (&admin, "9999", 5, "ext: no extension 9999"),
        (&admin, "30x1", 5, "ext: \"30x1\""),
        (&s.reader_tls("viewer"), "3001", 4, ""),
    ] {
        let (code, _, err) = orbitctl(&s, 1, tls, &["parked", "send", &id, ext]);
        assert_eq!(code, want, "{err}");
        assert!(err.contains(says), "{err} lacks {says}");
    }
    let carol_media = RtpPeer::bind();
    let carol = s.site[2]
        .phone("3001", "uas_recall_answer.xml", &carol_media)
        .args(["-d", "2500"])
        .spawn();
    // The registry knows where 3001 is registered (and that 3002 is nowhere).
    let locate = |ext: &str| {
        let args = ["locate", "--tenant", "orbit.local", ext, "--json"];
        orbitctl(&s, 0, &s.reader_tls("viewer"), &args)
    };
    let t0 = std::time::Instant::now();
    while json(&locate("3001").1)
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "3001 never located");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(json(&locate("3001").1)[0]["edge"], "site-c");
    assert_eq!(json(&locate("3002").1), json("[]"));
    assert_eq!(locate("30x1").0, 5);
    let send = ["parked", "send", id.as_str(), "3001", "--json"];
    let (code, out, err) = orbitctl(&s, 1, &admin, &send);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)[0]["phase"], "sent", "{out}");
    assert_eq!(json(&out)[0]["sent_to"], "3001", "{out}");
    // 3001 rings at site C, answers, and talks with Alice through both relays.
    let carol_relay = relay(carol.wait_log("relay_port", Duration::from_secs(10)));
    assert!(
        (s.site[2].rtp.0..=s.site[2].rtp.1).contains(&carol_relay.port()),
        "3001 talks to site C's relay ({carol_relay})"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_bridged(
        (&alice_media, alice_relay),
        (&carol_media, carol_relay),
        50,
        Duration::from_millis(400),
    );
    let c = carol.wait();
    assert!(c.ok(), "3001: {}", c.errors);
    assert!(c.logs.contains("recall_slot=701"), "{}", c.logs);
    // 3001 hung up: Alice is sent BYE; the slot is free.
    let a = alice.wait();
    assert!(a.ok(), "parked caller: {}", a.errors);
    let (_, out, _) = orbitctl(&s, 0, &admin, &["parked", "list", "--json"]);
    assert_eq!(json(&out), json("[]"));
    let (code, _, err) = orbitctl(&s, 1, &admin, &["parked", "send", &id, "3001"]);
    assert_eq!(code, 5, "parked no more: {err}");
    assert!(
        s.log(0).contains("parked call sent by an operator"),
        "{}",
        s.log(0)
    );
}

#[test]
fn an_operator_hands_the_leadership_to_another_voter_and_a_park_made_meanwhile_commits() {
    let s = Sites::start(&lot(90, 20));
    let admin = s.admin_tls.clone();
    let status = |node: usize| {
        let (code, out, err) = orbitctl(&s, node, &admin, &["cluster", "status", "--json"]);
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    let before = status(0);
    let leader = before["leader_id"].as_u64().unwrap();
    let to = if leader == 3 { 1 } else { leader + 1 };
    let to_arg = to.to_string();
    // A reader may not; a node that is not a member is not found.
    let reader = s.reader_tls("viewer");
    let (code, _, err) = orbitctl(&s, 0, &reader, &["cluster", "transfer", &to_arg]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = orbitctl(&s, 0, &admin, &["cluster", "transfer", "9"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("node 9 is not a member"), "{err}");
    // Asked at whatever node (orbitctl finds the leader), while a call is being parked.
    let transfer = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args(["--endpoint", &s.grpc[2].to_string(), "--json"])
        .args(&admin)
        .args(["cluster", "transfer", &to_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_alice, _media, _relay) = park_at_a(&s);
    let out = transfer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every node follows the new leader, in a later term; the park committed.
    for node in 0..3 {
        let t0 = std::time::Instant::now();
        while status(node)["leader_id"] != to {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "node {node}: {}",
                status(node)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(status(0)["term"].as_u64() > before["term"].as_u64());
    let (_, out, _) = orbitctl(&s, 0, &admin, &["parked", "list", "--json"]);
    assert_eq!(json(&out)[0]["slot"], 701, "{out}");
    // Again: it leads already, nothing to do.
    let (code, _, err) = orbitctl(&s, 1, &admin, &["cluster", "transfer", &to_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        s.log(to as usize - 1).contains("campaigning"),
        "{}",
        s.log(to as usize - 1)
    );
}
