//! Registry nodes as real processes (`orbitd registry run`), managed with the CLI: initialise a
//! cluster, add a learner, promote it, remove it, and kill -9 the leader; over mutual TLS, the
//! CLI changes the cluster only with an admin's certificate; config refuses a plaintext node off
//! loopback and a key file others may read.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct RegistryNode {
    id: u64,
    addr: SocketAddr,
    child: Child,
    /// What it has logged (stderr), whole.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for RegistryNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, id: u64, addr: SocketAddr) -> RegistryNode {
    start_with(dir, id, addr, "")
}

/// A node whose config has `extra` after its `[registry]` keys (a `[registry.tls]` table).
fn start_with(dir: &std::path::Path, id: u64, addr: SocketAddr, extra: &str) -> RegistryNode {
    let cfg = dir.join(format!("registry-{id}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[registry]\nid = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n{extra}",
            dir.join(format!("data-{id}")).display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .args(["registry", "run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start orbitd registry");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("registry ready") {
                let _ = tx.send(());
            }
            kept.lock().unwrap().push_str(&format!("{line}\n"));
            if std::env::var_os("ORBIT_TEST_LOG").is_some() {
                eprintln!("registry {id}: {line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("registry node did not start");
    RegistryNode {
        id,
        addr,
        child,
        log,
    }
}

/// `orbitd registry <args>`: (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orbitd"))
        .arg("registry")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or("")
}

/// Poll `status` at `at` until `ok` holds (bounded).
fn wait_status(at: &SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let (good, out) = cli(&["status", "--at", &at.to_string()]);
        if good && ok(&out) {
            return out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}; last status:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn membership_by_cli_and_leader_killed() {
    let dir = std::env::temp_dir().join(format!("orbit-registry-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let mut nodes: Vec<RegistryNode> = (1..=4).map(|id| start(&dir, id, free_addr())).collect();
    let a = |i: usize| nodes[i].addr.to_string();

    // Bad input is a clear error, not a crash.
    let (ok, out) = cli(&["init", "--at", &a(0), "one=127.0.0.1:1"]);
    assert!(!ok && out.contains("node ids are numbers from 1"), "{out}");

    let members: Vec<String> = (0..3).map(|i| format!("{}={}", i + 1, a(i))).collect();
    let mut args = vec!["init", "--at", &members[0][2..]];
    args.extend(members.iter().map(String::as_str));
    let (ok, out) = cli(&args);
    assert!(ok, "init: {out}");
    let st = wait_status(&nodes[0].addr, "a leader among 1-3", |s| {
        ["1", "2", "3"].contains(&field(s, "leader"))
    });
    assert_eq!(field(&st, "voters"), members.join(" "));

    // Node 4: learner, then voter, then removed; asked through node 2 (the CLI finds the leader).
    let four = format!("4={}", a(3));
    let (ok, out) = cli(&["add-learner", "--at", &a(1), &four]);
    assert!(ok, "add-learner: {out}");
    assert_eq!(field(&out, "learners"), four);
    let (ok, out) = cli(&["promote", "--at", &a(1), "4"]);
    assert!(ok, "promote: {out}");
    assert!(field(&out, "voters").ends_with(&four), "{out}");
    assert_eq!(field(&out, "learners"), "");
    let (ok, out) = cli(&["remove", "--at", &a(2), "4"]);
    assert!(ok, "remove: {out}");
    assert_eq!(field(&out, "voters"), members.join(" "));

    // kill -9 the leader: the other two elect a new one.
    let leader: u64 = field(
        &wait_status(&nodes[0].addr, "leader", |s| field(s, "leader") != "none"),
        "leader",
    )
    .parse()
    .unwrap();
    let idx = nodes.iter().position(|n| n.id == leader).unwrap();
    let mut dead = nodes.remove(idx);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let t0 = Instant::now();
    let survivor = nodes.iter().find(|n| n.id != 4).unwrap().addr;
    let st = wait_status(&survivor, "a new leader", |s| {
        let l = field(s, "leader");
        l != "none" && l != leader.to_string()
    });
    eprintln!(
        "new leader {} after {:?}",
        field(&st, "leader"),
        t0.elapsed()
    );
}

/// A follower killed and started again takes the log again without an election: it hears
/// from the leader before its own election timer runs out, and the term stays as it was.
/// (A member cut off for longer than an election timeout is another matter: it campaigns
/// alone, and its higher term unseats the leader once the cut heals; see DESIGN.md.)
#[test]
fn a_follower_killed_and_started_again_rejoins_without_an_election() {
    let dir = std::env::temp_dir().join(format!("orbit-registry-rejoin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let mut nodes: Vec<RegistryNode> = (1..=3).map(|id| start(&dir, id, free_addr())).collect();
    let members: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.addr))
        .collect();
    let mut args = vec!["init".to_string(), "--at".into(), nodes[0].addr.to_string()];
    args.extend(members.iter().cloned());
    let (ok, out) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "init: {out}");
    let st = wait_status(&nodes[0].addr, "a leader", |s| field(s, "leader") != "none");
    let leader: u64 = field(&st, "leader").parse().unwrap();
    let at_leader = nodes.iter().find(|n| n.id == leader).unwrap().addr;
    let term = field(
        &wait_status(&at_leader, "the leader's term", |_| true),
        "term",
    )
    .to_string();
    assert!(!term.is_empty(), "status names the term");

    // Each follower in turn: kill -9, down long enough for the leader's retries to reach their
    // longest pause, started again on its own data.
    for round in 0..3 {
        let i = nodes.iter().position(|n| n.id != leader).unwrap() + round % 2;
        let i = if nodes[i].id == leader { i + 1 } else { i };
        let (id, addr) = (nodes[i].id, nodes[i].addr);
        nodes[i].child.kill().unwrap();
        nodes[i].child.wait().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        nodes[i] = start(&dir, id, addr);
        wait_status(&addr, "the restarted follower knows the leader", |s| {
            field(s, "leader") == leader.to_string()
        });
        std::thread::sleep(Duration::from_secs(1));
        let st = wait_status(&at_leader, "the leader's status", |_| true);
        assert_eq!(
            (field(&st, "leader"), field(&st, "term")),
            (leader.to_string().as_str(), term.as_str()),
            "round {round}: node {id} came back and an election followed:\n{st}"
        );
    }
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `--ca/--cert/--key` flags for `files`.
fn tls_flags(f: &orbit_registry::TlsFiles) -> Vec<String> {
    [("--ca", &f.ca), ("--cert", &f.cert), ("--key", &f.key)]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.display().to_string()])
        .collect()
}

#[test]
fn over_mutual_tls_only_an_admins_certificate_changes_the_cluster() {
    use orbit_registry::Caller;
    let dir = std::env::temp_dir().join(format!("orbit-registry-mtls-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    let pki = dir.join("pki");
    let ca = orbit_registry::dev_pki::DevCa::new().unwrap();
    let node = ca
        .write(&pki, "registry-1", &Caller::Node(1), &["127.0.0.1"])
        .unwrap();
    let admin = ca
        .write(&pki, "admin", &Caller::Admin("ops".into()), &[])
        .unwrap();
    let edge = ca
        .write(&pki, "site-a", &Caller::Edge("site-a".into()), &[])
        .unwrap();
    let table = format!(
        "[registry.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        node.ca.display(),
        node.cert.display(),
        node.key.display()
    );
    let n = start_with(&dir, 1, free_addr(), &table);
    let at = n.addr.to_string();
    let with = |f: &orbit_registry::TlsFiles, args: &[&str]| {
        let flags = tls_flags(f);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        cli(&all)
    };
    let member = format!("1={at}");
    let (ok, out) = with(&edge, &["init", "--at", &at, &member]);
    assert!(
        !ok && out.contains("may not change the cluster"),
        "an edge's certificate: {out}"
    );
    let (ok, out) = cli(&["status", "--at", &at]);
    assert!(!ok, "no certificate, plaintext: {out}");
    let (ok, out) = with(&admin, &["init", "--at", &at, &member]);
    assert!(ok, "the admin's: {out}");
    let t0 = Instant::now();
    loop {
        let (ok, out) = with(&edge, &["status", "--at", &at]);
        if ok && field(&out, "leader") == "1" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = with(&edge, &["remove", "--at", &at, "1"]);
    assert!(!ok && out.contains("may not change the cluster"), "{out}");
}

#[test]
fn check_config_refuses_plaintext_off_loopback_and_a_key_others_may_read() {
    use orbit_registry::Caller;
    let dir = std::env::temp_dir().join(format!("orbit-registry-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let check = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_orbitd"))
            .arg("check-config")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), err)
    };
    let data = dir.join("data").display().to_string();
    let (ok, err) = check(
        "open.toml",
        &format!("[registry]\nid = 1\nlisten = \"0.0.0.0:7001\"\ndata_dir = \"{data}\"\n"),
    );
    assert!(!ok && err.contains("not a loopback address"), "{err}");
    // Each listener of its own: off loopback only with TLS, and never two on one address.
    let (ok, err) = check(
        "open-admin.toml",
        &format!(
            "[registry]\nid = 1\nlisten = \"127.0.0.1:7001\"\nadmin_listen = \"0.0.0.0:7003\"\ndata_dir = \"{data}\"\n"
        ),
    );
    assert!(
        !ok && err.contains("admin_listen 0.0.0.0:7003 is not a loopback"),
        "{err}"
    );
    let (ok, err) = check(
        "same.toml",
        &format!(
            "[registry]\nid = 1\nlisten = \"127.0.0.1:7001\"\nedge_listen = \"127.0.0.1:7001\"\ndata_dir = \"{data}\"\n"
        ),
    );
    assert!(
        !ok && err.contains("edge_listen and listen are both"),
        "{err}"
    );
    let ca = orbit_registry::dev_pki::DevCa::new().unwrap();
    let f = ca
        .write(
            &dir.join("pki"),
            "registry-1",
            &Caller::Node(1),
            &["10.0.0.1"],
        )
        .unwrap();
    let tls = format!(
        "[registry]\nid = 1\nlisten = \"0.0.0.0:7001\"\ndata_dir = \"{data}\"\n[registry.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        f.ca.display(),
        f.cert.display(),
        f.key.display()
    );
    let (ok, err) = check("tls.toml", &tls);
    assert!(ok, "with TLS it may listen anywhere: {err}");
    // Bearer tokens: over TLS only, a known role, a SHA-256.
    let token = |role: &str, sha: &str| {
        format!("[[registry.tokens]]\nname = \"reports\"\nrole = \"{role}\"\nsha256 = \"{sha}\"\n")
    };
    let good = "ab".repeat(32);
    let (ok, err) = check("tokens.toml", &format!("{tls}{}", token("read", &good)));
    assert!(ok, "{err}");
    let (ok, err) = check("tokens.toml", &format!("{tls}{}", token("root", &good)));
    assert!(!ok && err.contains("read or admin"), "{err}");
    let (ok, err) = check("tokens.toml", &format!("{tls}{}", token("read", "abc")));
    assert!(!ok && err.contains("64 hex digits"), "{err}");
    let plain = format!(
        "[registry]\nid = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"{data}\"\n{}",
        token("read", &good)
    );
    let (ok, err) = check("plain-tokens.toml", &plain);
    assert!(
        !ok && err.contains("bearer tokens need [registry.tls]"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, err) = check("tls.toml", &tls);
    assert!(!ok && err.contains("chmod 600"), "{err}");
}

#[test]
fn check_config_refuses_the_example_configs_secrets_and_a_sip_key_others_may_read() {
    let dir = std::env::temp_dir().join(format!("orbit-example-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let check = |text: &str| {
        let p = dir.join("edge.toml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_orbitd"))
            .arg("check-config")
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/edge.example.toml"),
    )
    .unwrap();
    // As shipped: an extension's password is the example's.
    let (ok, err) = check(&example);
    assert!(!ok && err.contains("example config's password"), "{err}");
    let ours = example.replace("password = \"change-me\"", "password = \"s3cret-1001\"");
    // Then its trunk secret.
    let (ok, err) = check(&ours);
    assert!(!ok && err.contains("the example's"), "{err}");
    let ours = ours.replace(
        "change-me-to-32-random-characters",
        "a-secret-of-this-deployment-only",
    );
    // Then the SIP certificate it names, which must exist, with a key only its owner reads.
    let ck = rcgen::generate_simple_self_signed(vec!["edge.example.com".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ours = ours
        .replace("/etc/orbit/tls/cert.pem", &cert.display().to_string())
        .replace("/etc/orbit/tls/key.pem", &key.display().to_string());
    let (ok, err) = check(&ours);
    assert!(!ok && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, err) = check(&ours);
    assert!(ok, "{err}");
}

/// `orbitctl --json <args>` at `at` (plaintext: the nodes listen on loopback): (exit code,
/// stdout, stderr).
fn orbitctl(at: &SocketAddr, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args(["--endpoint", &at.to_string(), "--timeout", "10", "--json"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn orbitctl_changes_the_membership_on_the_leader_and_takes_a_snapshot() {
    let dir = std::env::temp_dir().join(format!("orbit-orbitctl-members-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let nodes: Vec<RegistryNode> = (1..=4).map(|id| start(&dir, id, free_addr())).collect();
    let members: Vec<String> = (0..3)
        .map(|i| format!("{}={}", i + 1, nodes[i].addr))
        .collect();
    let mut args = vec!["init", "--at", &members[0][2..]];
    args.extend(members.iter().map(String::as_str));
    let (ok, out) = cli(&args);
    assert!(ok, "init: {out}");
    wait_status(&nodes[0].addr, "a leader", |s| field(s, "leader") != "none");
    let four = nodes[3].addr.to_string();
    let roles = |out: &str| -> Vec<(u64, bool)> {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["voter"].as_bool().unwrap()))
            .collect()
    };
    // Asked of node 3, whichever the leader is: orbitctl takes it there.
    let at = nodes[2].addr;
    let (code, out, err) = orbitctl(&at, &["cluster", "add", "4", &four]);
    assert_eq!(code, 0, "{err}");
    assert!(roles(&out).contains(&(4, false)), "a learner: {out}");
    // Bad input, clearly: exit 5 with one line naming what is wrong.
    for (args, says) in [
        (
            vec!["cluster", "add", "4", four.as_str()],
            "a member already",
        ),
        (
            vec!["cluster", "add", "0", four.as_str()],
            "id: node ids start at 1",
        ),
        (vec!["cluster", "add", "5", "nowhere"], "is not host:port"),
        (vec!["cluster", "promote", "9"], "not a learner"),
        (vec!["cluster", "remove", "9"], "not a member"),
    ] {
        let (code, _, err) = orbitctl(&at, &args);
        assert_eq!(code, 5, "{args:?}: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // A learner cannot lead: promote it first.
    let (code, _, err) = orbitctl(&at, &["cluster", "transfer", "4"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("node 4 is a learner"), "{err}");
    let (code, out, err) = orbitctl(&at, &["cluster", "promote", "4"]);
    assert_eq!(code, 0, "{err}");
    assert!(roles(&out).contains(&(4, true)), "a voter: {out}");
    let (code, out, err) = orbitctl(&at, &["cluster", "remove", "4"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<u64> = roles(&out).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // A snapshot of node 2's state, at the index its log has applied.
    let (code, out, err) = orbitctl(&nodes[1].addr, &["cluster", "snapshot"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["index"].as_u64().unwrap() > 0, "{out}");
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount (the disk-full test runs as root, as the chaos tests do)");
        assert!(st.success(), "mounting a tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A voter whose disk fills up (its data directory on a small tmpfs, then filled) stops: the
/// process ends non-zero, naming the node, the cause and what to do, instead of living on with
/// Raft stopped inside it (it answered health checks as serving and took no part in the
/// cluster). The other two go on committing.
#[test]
fn a_voter_whose_disk_fills_ends_saying_why_and_the_others_go_on() {
    let dir = std::env::temp_dir().join(format!("orbit-registry-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let _disk = Tmpfs::mount(&dir.join("data-3"), "8m");
    let mut nodes: Vec<RegistryNode> = (1..=3).map(|id| start(&dir, id, free_addr())).collect();
    let members: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.addr))
        .collect();
    let mut args = vec!["init".to_string(), "--at".into(), nodes[0].addr.to_string()];
    args.extend(members.iter().cloned());
    let (ok, out) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "init: {out}");
    wait_status(&nodes[2].addr, "node 3 follows a leader", |s| {
        field(s, "leader") != "none"
    });
    // Fill node 3's disk to the last byte.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.join("data-3/filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
    }
    // Writes, many at once, through node 1, until node 3 has gone (bounded).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_rt = rt.enter();
    let link =
        std::sync::Arc::new(orbit_registry::Link::new(&[nodes[0].addr.to_string()], None).unwrap());
    let t0 = Instant::now();
    let mut n = 0u64;
    let status = loop {
        if let Some(st) = nodes[2].child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "node 3 still running after {n} writes with its disk full:\n{}",
            nodes[2].log.lock().unwrap()
        );
        rt.block_on(async {
            let mut writes = tokio::task::JoinSet::new();
            for _ in 0..32 {
                n += 1;
                let link = link.clone();
                let cmd = orbit_state::Command::Lease {
                    edge: format!("site-{}", n % 100),
                    ttl_ms: 60_000,
                    incarnation: n,
                    replaces: 0,
                    sip: None,
                    load: Default::default(),
                };
                writes.spawn(async move { link.propose(&cmd).await });
            }
            writes.join_all().await;
        });
    };
    let log = nodes[2].log.lock().unwrap().clone();
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("registry node 3 stopped")
            && log.contains("No space left on device")
            && log.contains("the disk holding that data directory is full"),
        "says which node, why, and what to do:\n{log}"
    );
    // The other two still make a quorum.
    let cmd = orbit_state::Command::SeedLot(orbit_state::LotConfig {
        tenant: "example.com".into(),
        park_ext: "700".into(),
        first_slot: 701,
        last_slot: 720,
        parking_ms: 90_000,
        recall_ring_ms: 20_000,
        fallback: None,
        choice: Default::default(),
    });
    let committed = rt.block_on(link.propose(&cmd));
    assert!(committed.is_ok(), "{committed:?}");
}
