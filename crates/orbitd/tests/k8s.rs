//! The Kubernetes manifests (`deploy/k8s`). Every overlay renders and is valid for Kubernetes
//! 1.32, strictly (`validate.sh`). The three-site overlay's pods, run in Docker as the kubelet
//! would run them (`docker-run.py`: their commands, environment, ConfigMaps and Secrets as
//! files, volumes, security settings and exec probes, each pod at an address of its own),
//! get ready, make their Raft cluster through the init Job, and carry a call parked at site A
//! and retrieved at site C with RTP both ways. Strangers are turned away: the admin API without
//! a certificate, and a metrics scrape from outside the manifests' networks.
//!
//! No Kubernetes cluster runs here (none can be reached, none can be pulled), so scheduling,
//! NetworkPolicies, the HorizontalPodAutoscaler and the PodDisruptionBudget are checked only
//! against the API's schemas.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use common::docker::{image, repo, run, show_tail, Phones};
use common::*;

fn python() -> String {
    std::env::var("ORBIT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// kubectl for the scripts: one on the PATH, or the one `get-kubectl.sh` installs.
fn ensure_kubectl() {
    let found = Command::new("sh")
        .args([
            "-c",
            "command -v kubectl || [ -x \"$HOME/.cache/orbit-venv/bin/kubectl\" ]",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        run(Command::new("bash").arg(repo().join("deploy/k8s/get-kubectl.sh")));
    }
}

#[test]
fn every_overlay_renders_and_is_valid_for_kubernetes() {
    ensure_kubectl();
    let out = run(Command::new("bash").arg(repo().join("deploy/k8s/validate.sh")));
    for overlay in ["three-site", "single-site"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("ok   {overlay}: "))),
            "{out}"
        );
    }
}

/// An overlay's pods in Docker (`docker-run.py up`), removed (`down`) when dropped.
struct Pods {
    project: String,
    up: serde_json::Value,
}

impl Pods {
    fn up(overlay: &Path, tag: &str, image: &str) -> Pods {
        ensure_kubectl();
        let project = format!("orbit-k8s-{tag}-{}", std::process::id());
        let out = Command::new(python())
            .arg(repo().join("deploy/k8s/docker-run.py"))
            .args(["up", "--overlay"])
            .arg(overlay)
            .args(["--project", &project, "--image", image, "--timeout", "180"])
            .output()
            .unwrap();
        let pods = Pods {
            project,
            up: serde_json::from_slice(&out.stdout).unwrap_or_default(),
        };
        assert!(
            out.status.success(),
            "docker-run.py up: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        pods
    }

    fn ip(&self, pod: &str) -> IpAddr {
        self.up["pods"][pod]["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("no pod {pod}: {}", self.up))
            .parse()
            .unwrap()
    }

    fn gateway(&self) -> IpAddr {
        self.up["gateway"].as_str().unwrap().parse().unwrap()
    }

    fn container(&self, pod: &str) -> String {
        self.up["pods"][pod]["container"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-{pod}", self.project))
    }

    /// `args` run in `pod` (`kubectl exec POD -- ARGS`), with the pod's environment: for
    /// `orbitctl`, its own certificate and 127.0.0.1 (the certificates name no pod address).
    fn exec(&self, pod: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("docker")
            .args(["exec", &self.container(pod)])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn logs(&self, pod: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.container(pod)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pod in [
                "orbit-registry-0",
                "orbit-edge-site-a-0",
                "orbit-edge-site-c-0",
            ] {
                show_tail(pod, &self.logs(pod), 30);
            }
        }
        let _ = Command::new(python())
            .arg(repo().join("deploy/k8s/docker-run.py"))
            .args(["down", "--project", &self.project])
            .output();
    }
}

/// The HTTP status a GET of `http://{at}:9464/metrics` gets from this host.
fn metrics_status(at: IpAddr) -> String {
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('{at}', 9464, timeout=5)\nc.request('GET', '/metrics')\nprint(c.getresponse().status)"
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_three_site_pods_make_a_cluster_that_parks_at_one_site_and_retrieves_at_another() {
    require_sipp();
    let image = image();
    let pods = Pods::up(&repo().join("deploy/k8s/overlays/three-site"), "3", image);

    // The init Job made the cluster: three voters, a leader, as the admin sees it.
    let (code, out, err) = pods.exec(
        "orbit-registry-0",
        &["orbitctl", "cluster", "status", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status["leader_id"].as_u64().is_some_and(|l| l > 0), "{out}");
    let voters = status["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["voter"] == true).count());
    assert_eq!(voters, Some(3), "{out}");
    // Every site's edge holds its lease.
    let edges = status["edges"].as_array().cloned().unwrap_or_default();
    for site in ["site-a", "site-b", "site-c"] {
        let name = format!("{site}/orbit-edge-{site}-0");
        assert!(
            edges.iter().any(|e| e["name"] == name.as_str()),
            "{name}: {out}"
        );
    }

    // A stranger with an admin certificate from a CA of its own gets nothing from the
    // registry, even from inside the pod.
    let (code, _, err) = pods.exec(
        "orbit-registry-0",
        &[
            "orbitd",
            "pki",
            "issue",
            "--dir",
            "/tmp/stranger",
            "--who",
            "admin:mallory",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pods.exec(
        "orbit-registry-0",
        &[
            "orbitctl",
            "--cert",
            "/tmp/stranger/admin-mallory.pem",
            "--key",
            "/tmp/stranger/admin-mallory.key",
            "cluster",
            "status",
        ],
    );
    assert_ne!(code, 0, "the registry answered a stranger's certificate");
    assert!(!err.is_empty());

    // Parked at A, retrieved at C, by phones on this host (the project network's gateway).
    let phones = Phones::new(
        pods.gateway(),
        ["site-a", "site-b", "site-c"]
            .iter()
            .map(|s| pods.ip(&format!("orbit-edge-{s}-0")))
            .collect(),
    );
    let (phone, media, relay) = phones.park(0, "1001", "1002");
    phones.retrieve(2, "3001", "701", &media, relay);
    let p = phone.wait();
    assert!(p.ok(), "parked party: {}", p.errors);

    // The edges serve metrics to the pod and node networks the manifests name, and this host
    // is on neither.
    assert_eq!(metrics_status(phones.edges[0]), "403");

    // The pod deleted, as the kubelet stops it: its preStop hook drains the edge and returns
    // once the edge has left the registry and exited.
    let hook: Vec<String> = pods.up["pods"]["orbit-edge-site-a-0"]["pre_stop"]
        .as_array()
        .expect("the edge has a preStop hook")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut cmd = Command::new("docker");
    cmd.args(["exec", &pods.container("orbit-edge-site-a-0")])
        .args(&hook);
    let mut hook_run = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    while hook_run.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the preStop hook never returned"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = pods.logs("orbit-edge-site-a-0");
    assert!(log.contains("drained: lease released"), "{log}");
    // The pod comes back under its name with its state volume (the StatefulSet recreates it;
    // here Docker restarts the container): it takes calls again, not drained anew by the log's
    // old drain.
    let t0 = std::time::Instant::now();
    loop {
        let (code, _, _) = pods.exec(
            "orbit-edge-site-a-0",
            &["orbitctl", "--timeout", "3", "health"],
        );
        let log = pods.logs("orbit-edge-site-a-0");
        if code == 0 && log.matches("registry lease held").count() >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "site A's edge never came back ready (health {code}):\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn a_registry_scaled_to_four_pods_makes_its_fourth_a_voter_by_itself() {
    let image = image();
    // The single-site overlay with the StatefulSet at four replicas, as `kubectl scale` or an
    // overlay of the operator's own would have it (kustomize wants the base as a relative path).
    let dir = std::env::temp_dir().join(format!("orbit-k8s-scaled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = repo()
        .canonicalize()
        .unwrap()
        .join("deploy/k8s/overlays/single-site");
    let up = "../".repeat(dir.components().count() - 1);
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{up}{}]\nreplicas: [{{name: orbit-registry, count: 4}}]\n",
            base.display().to_string().trim_start_matches('/')
        ),
    )
    .unwrap();
    // Up means every pod ready, the fourth too: ready is "a leader known", which a node
    // outside the cluster never knows.
    let pods = Pods::up(&dir, "4", image);
    let _ = std::fs::remove_dir_all(&dir);
    // A learner knows the leader, and so is ready; a voter soon after (it asks again every
    // 5 s until it has caught up).
    let t0 = std::time::Instant::now();
    loop {
        let (code, out, err) = pods.exec(
            "orbit-registry-0",
            &["orbitctl", "cluster", "status", "--json"],
        );
        assert_eq!(code, 0, "{err}");
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        let members = status["members"].as_array().cloned().unwrap_or_default();
        let fourth = members.iter().find(|m| m["id"] == 4);
        if fourth.is_some_and(|m| {
            m["voter"] == true
                && m["addr"] == "orbit-registry-3.orbit-registry.orbit.svc.cluster.local:50051"
        }) {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "{out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        pods.logs("orbit-registry-3")
            .contains("joined the registry as a voter"),
        "{}",
        pods.logs("orbit-registry-3")
    );
}
