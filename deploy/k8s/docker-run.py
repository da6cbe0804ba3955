#!/usr/bin/env python3
"""Run the pods an overlay renders in Docker, as Kubernetes would run them: a test of the
manifests themselves (their commands, environment, volumes, security settings and probes)
without a cluster.

    docker-run.py up --overlay deploy/k8s/overlays/three-site --project t1 [--image orbit:test]
    docker-run.py down --project t1

`up` renders the overlay (`kubectl kustomize`), makes the Secrets the pods name (certificates
from deploy/k8s/issue-certs.sh run in the image, as the README does; a random trunk secret),
starts every StatefulSet's pods (name-0..N-1) and every Job on a Docker network of the
project's own, runs the exec probes until each pod is ready (each Job: until it succeeds),
and prints one JSON line: {"pods": {name: {"ip", "container", "ready", "pre_stop"}}, "network", "subnet",
"gateway", "trunk_secret", "pki"}. Its exit status is 0 only if everything got ready.

What differs from Kubernetes, on purpose or of necessity:
- hostNetwork pods run on the project network at an address of their own, which stands for
  their node's (status.podIP = status.hostIP = that address; hostname node-<pod>).
- DNS: Services and pods' names (<pod>.<headless svc>, <svc>, with .<ns>, .<ns>.svc and
  .<ns>.svc.cluster.local) are Docker network aliases; every selected pod is published,
  ready or not; no search path.
- Probes: exec only, run by this script until the pod is ready, never after; a container
  that fails its startup or liveness probe is restarted as the kubelet would. Crashed
  containers are restarted by Docker (--restart), not the kubelet.
- Scheduling (affinity, spread, nodeSelector), resources' requests, NetworkPolicies and the
  HorizontalPodAutoscaler do nothing; limits become --cpus/--memory. A Job's pod is named
  after the Job (Kubernetes adds a random suffix).
"""

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
LABEL = "orbit.project"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(args, check=True, timeout=None, input=None):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])}...: exit {p.returncode}\n{p.stderr.strip()}")
    return p


def docker(*args, **kw):
    return run(["docker", *args], **kw)


def state_dir(project):
    return Path(tempfile.gettempdir()) / "orbit-docker-run" / project


# ---- Kubernetes' own rules ----

def expand(s, env):
    """Kubernetes' $(VAR) expansion of command, args and env values: $$ is $, $(NAME) is
    NAME's value if NAME is defined, any other text is left as it is."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "$" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = s.find(")", i + 2)
                if end >= 0:
                    name = s[i + 2:end]
                    out.append(env[name] if name in env else s[i:end + 1])
                    i = end + 1
                    continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---- the rendered overlay ----

class Overlay:
    def __init__(self, docs):
        self.docs = [d for d in docs if d]
        self.ns = next((d["metadata"]["namespace"] for d in self.docs
                        if d["metadata"].get("namespace")), "default")
        by = lambda k: {d["metadata"]["name"]: d for d in self.docs if d["kind"] == k}
        self.configmaps = {n: dict(d.get("data") or {}) for n, d in by("ConfigMap").items()}
        self.secrets = {}
        for n, d in by("Secret").items():
            data = {k: base64.b64decode(v) for k, v in (d.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (d.get("stringData") or {}).items()})
            self.secrets[n] = data
        self.services = by("Service")
        self.statefulsets = by("StatefulSet")
        self.jobs = by("Job")
        self.hpa_max = {d["spec"]["scaleTargetRef"]["name"]: d["spec"]["maxReplicas"]
                        for d in by("HorizontalPodAutoscaler").values()}

    def pods(self):
        """Every pod: (name, spec, labels, kind, owner), StatefulSets' by ordinal, then Jobs'."""
        pods = []
        for name, sts in self.statefulsets.items():
            tmpl = sts["spec"]["template"]
            for i in range(sts["spec"].get("replicas", 1)):
                labels = dict(tmpl["metadata"].get("labels") or {})
                labels["statefulset.kubernetes.io/pod-name"] = f"{name}-{i}"
                labels["apps.kubernetes.io/pod-index"] = str(i)
                pods.append(Pod(f"{name}-{i}", tmpl, labels, sts, i))
        for name, job in self.jobs.items():
            tmpl = job["spec"]["template"]
            pods.append(Pod(name, tmpl, dict(tmpl["metadata"].get("labels") or {}), job, 0))
        return pods


class Pod:
    def __init__(self, name, tmpl, labels, owner, ordinal):
        self.name, self.spec, self.labels = name, tmpl["spec"], labels
        self.annotations = tmpl["metadata"].get("annotations") or {}
        self.owner, self.ordinal = owner, ordinal
        self.job = owner["kind"] == "Job"
        self.host_network = bool(self.spec.get("hostNetwork"))
        self.ip = None
        self.container = None
        self.ready = False
        self.failed = None


# ---- Secrets: made as deploy/k8s/README.md makes them ----

def referenced_secrets(pods):
    names = set()
    for p in pods:
        for v in p.spec.get("volumes") or []:
            if "secret" in v:
                names.add(v["secret"]["secretName"])
        for c in p.spec.get("initContainers", []) + p.spec["containers"]:
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    names.add(ref["name"])
            for e in c.get("envFrom") or []:
                if "secretRef" in e:
                    names.add(e["secretRef"]["name"])
    return names


def make_secrets(ov, pods, image, sdir):
    """The Secrets the pods name and the overlay does not hold: certificates issued by
    issue-certs.sh in the image for the voters, sites and edges the manifests have."""
    wanted = referenced_secrets(pods) - set(ov.secrets)
    if not wanted:
        return None
    pki = sdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    voters = ov.statefulsets.get("orbit-registry", {}).get("spec", {}).get("replicas", 1)
    sites, edges = [], 1
    for name, sts in ov.statefulsets.items():
        site = sts["spec"]["template"]["metadata"].get("labels", {}).get("orbit.example/site")
        if site:
            sites.append(site)
            edges = max(edges, sts["spec"].get("replicas", 1), ov.hpa_max.get(name, 1))
    docker("run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
           "-e", f"NAMESPACE={ov.ns}", "-e", f"VOTERS={voters}", "-e", f"SITES={' '.join(sites)}",
           "-e", f"EDGES={edges}", "-v", f"{pki}:/pki",
           "-v", f"{HERE / 'issue-certs.sh'}:/issue-certs.sh:ro",
           "--entrypoint", "/bin/sh", image, "/issue-certs.sh", "/pki")
    read = lambda f: (pki / f).read_bytes()
    trunk = secrets.token_hex(24)
    for name in sorted(wanted):
        if name == "orbit-registry-tls":
            files = ["ca.pem"] + [f"registry-{i}.{x}" for i in range(1, voters + 1) for x in ("pem", "key")]
            ov.secrets[name] = {f: read(f) for f in files}
        elif m := re.fullmatch(r"orbit-edge-(.+)-tls", name):
            files = ["ca.pem"] + [f"orbit-edge-{m[1]}-{n}.{x}" for n in range(edges) for x in ("pem", "key")]
            ov.secrets[name] = {f: read(f) for f in files}
        elif name == "orbit-admin-tls":
            ov.secrets[name] = {"ca.pem": read("ca.pem"), "admin.pem": read("admin-ops.pem"),
                                "admin.key": read("admin-ops.key")}
        elif name == "orbit-trunk":
            ov.secrets[name] = {"secret": trunk.encode()}
        else:
            raise SystemExit(f"secret {name}: no recipe for it (the README's steps make none)")
    return trunk


# ---- containers ----

class Project:
    def __init__(self, args):
        self.name = args.project
        self.image = args.image
        self.sdir = state_dir(self.name)
        self.timeout = args.timeout

    def network(self, subnet, avoid):
        """The project's network, on `subnet` or the first free /24 from one its name picks,
        outside the networks in `avoid` (the cluster's own, as the overlay's ConfigMaps name
        them: this network stands for the outside, where the phones and an operator are)."""
        h = int(hashlib.sha256(self.name.encode()).hexdigest(), 16)
        candidates = [subnet] if subnet else [
            net for net in (f"10.{200 + x // 256}.{x % 256}.0/24"
                            for x in ((h + k) % 12800 for k in range(200)))
            if not any(ipaddress.ip_network(net).overlaps(a) for a in avoid)][:20]
        for net in candidates:
            p = docker("network", "create", "--driver", "bridge", "--subnet", net,
                       "--label", f"{LABEL}={self.name}", self.name, check=False)
            if p.returncode == 0:
                return ipaddress.ip_network(net)
            if "overlap" not in p.stderr:
                raise SystemExit(f"docker network create: {p.stderr.strip()}")
        raise SystemExit("no free subnet for the project's network (give --subnet)")


def field_ref(path, pod, ov, node_ip):
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (pod.labels if m[1] == "labels" else pod.annotations).get(m[2], "")
    values = {
        "metadata.name": pod.name, "metadata.namespace": ov.ns,
        "metadata.uid": hashlib.md5(pod.name.encode()).hexdigest(),
        "status.podIP": pod.ip, "status.podIPs": pod.ip, "status.hostIP": node_ip,
        "spec.nodeName": node_name(pod), "spec.serviceAccountName": "default",
    }
    if path not in values:
        raise SystemExit(f"{pod.name}: fieldRef {path} not supported")
    return values[path]


def node_name(pod):
    return f"node-{pod.name}" if pod.host_network else "node-docker"


def container_env(c, pod, ov, node_ip):
    env = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            data = ov.configmaps.get(src["configMapRef"]["name"], {})
        else:
            data = {k: v.decode() for k, v in ov.secrets.get(src["secretRef"]["name"], {}).items()}
        env.update({src.get("prefix", "") + k: v for k, v in data.items()})
    for e in c.get("env") or []:
        if "value" in e or "valueFrom" not in e:
            env[e["name"]] = expand(str(e.get("value", "")), env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[e["name"]] = field_ref(vf["fieldRef"]["fieldPath"], pod, ov, node_ip)
        elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
            ref = vf.get("secretKeyRef") or vf["configMapKeyRef"]
            store = ov.secrets if "secretKeyRef" in vf else ov.configmaps
            value = store.get(ref["name"], {}).get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                raise SystemExit(f"{pod.name}: env {e['name']}: {ref['name']} has no key {ref['key']}")
            env[e["name"]] = value.decode() if isinstance(value, bytes) else value
        else:
            raise SystemExit(f"{pod.name}: env {e['name']}: {list(vf)} not supported")
    return env


def write_files(dest, data, volume, fs_group):
    """A ConfigMap's or Secret's keys as files, as the kubelet writes them: mode defaultMode
    (or the item's), root's, and with an fsGroup that group's and readable by it."""
    dest.mkdir(parents=True, exist_ok=True)
    default = volume.get("defaultMode", 0o644)
    items = volume.get("items") or [{"key": k, "path": k} for k in data]
    for it in items:
        if it["key"] not in data:
            if volume.get("optional"):
                continue
            raise SystemExit(f"{volume.get('name') or volume}: no key {it['key']}")
        f = dest / it["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        v = data[it["key"]]
        f.write_bytes(v if isinstance(v, bytes) else v.encode())
        mode = it.get("mode", default)
        if fs_group is not None:
            mode |= 0o440
            try:
                os.chown(f, 0, fs_group)
            except PermissionError:
                mode |= 0o004  # not root here: let the container read it anyway
        os.chmod(f, mode)
    os.chmod(dest, 0o755)


def volume_mounts(pod, ov, proj):
    """The pod's volumes as docker --mount arguments, by volume name; and the Docker volumes
    to prepare (name, mode, group)."""
    sec = pod.spec.get("securityContext") or {}
    fs_group = sec.get("fsGroup")
    claims = {t["metadata"]["name"] for t in (pod.owner["spec"].get("volumeClaimTemplates") or [])}
    mounts, prepare = {}, []
    for v in pod.spec.get("volumes") or []:
        n = v["name"]
        if "configMap" in v or "secret" in v:
            src = v.get("configMap") or v["secret"]
            ref = src.get("name") or src.get("secretName")
            store = ov.configmaps if "configMap" in v else ov.secrets
            if ref not in store and not src.get("optional"):
                raise SystemExit(f"{pod.name}: volume {n}: no {'ConfigMap' if 'configMap' in v else 'Secret'} {ref}")
            path = proj.sdir / "pods" / pod.name / n
            write_files(path, store.get(ref, {}), src, fs_group)
            mounts[n] = ("bind", str(path))
        elif "emptyDir" in v:
            # A Docker volume, medium Memory or not: like an emptyDir it outlives a container's
            # restart and is shared with the init containers (a tmpfs mount is neither).
            vol = f"{proj.name}-{pod.name}-{n}"
            mounts[n] = ("volume", vol)
            prepare.append((vol, "0777", None))
        elif "persistentVolumeClaim" in v:
            vol = f"{proj.name}-{v['persistentVolumeClaim']['claimName']}"
            mounts[n] = ("volume", vol)
            prepare.append((vol, "2775" if fs_group else None, fs_group))
        else:
            raise SystemExit(f"{pod.name}: volume {n}: {[k for k in v if k != 'name']} not supported")
    for c in claims - set(mounts):
        vol = f"{proj.name}-{c}-{pod.name}"
        mounts[c] = ("volume", vol)
        prepare.append((vol, "2775" if fs_group else None, fs_group))
    return mounts, prepare


def mount_args(c, mounts, pod):
    args = []
    for m in c.get("volumeMounts") or []:
        kind, src = mounts[m["name"]]
        dst, ro, sub = m["mountPath"], m.get("readOnly", False), m.get("subPath")
        if sub:
            if kind != "bind":
                raise SystemExit(f"{pod.name}: subPath on a {kind} is not supported here")
            src = f"{src}/{sub}"
        # A volume starts as the kubelet leaves it, without the image's files at that path.
        nocopy = ",volume-nocopy" if kind == "volume" else ""
        args += ["--mount", f"type={kind},src={src},dst={dst}{nocopy}" + (",readonly" if ro else "")]
    return args


def cpu_limit(v):
    v = str(v)
    return str(int(v[:-1]) / 1000) if v.endswith("m") else v


def docker_run_args(c, pod, ov, proj, mounts, aliases, node_ip, image, restart):
    sec = {**(pod.spec.get("securityContext") or {}), **(c.get("securityContext") or {})}
    name = f"{proj.name}-{pod.name}" + (f"-init-{c['name']}" if restart == "init" else "")
    args = ["run", "-d", "--name", name, "--pull", "never",
            "--label", f"{LABEL}={proj.name}", "--label", f"orbit.pod={pod.name}",
            "--network", proj.name, "--ip", pod.ip,
            "--hostname", node_name(pod) if pod.host_network else pod.name]
    for a in aliases:
        args += ["--network-alias", a]
    if restart != "init":
        args += ["--restart", restart,
                 "--stop-timeout", str(pod.spec.get("terminationGracePeriodSeconds", 30))]
    if "runAsUser" in sec:
        if sec["runAsUser"] == 0 and sec.get("runAsNonRoot"):
            raise SystemExit(f"{pod.name}: runAsNonRoot with runAsUser 0")
        args += ["--user", f"{sec['runAsUser']}" + (f":{sec['runAsGroup']}" if "runAsGroup" in sec else "")]
    elif sec.get("runAsNonRoot"):
        user = docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip()
        if user.split(":")[0] in ("", "0", "root"):
            raise SystemExit(f"{pod.name}: runAsNonRoot, and the image runs as root")
    for g in ([sec["fsGroup"]] if "fsGroup" in sec else []) + list(sec.get("supplementalGroups") or []):
        args += ["--group-add", str(g)]
    if sec.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    caps = sec.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        args += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        args += ["--cap-add", cap]
    if sec.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sec.get("privileged"):
        args.append("--privileged")
    limits = (c.get("resources") or {}).get("limits") or {}
    if "cpu" in limits:
        args += ["--cpus", cpu_limit(limits["cpu"])]
    if "memory" in limits:
        args += ["--memory", str(limits["memory"]).replace("i", "").lower()]
    env = container_env(c, pod, ov, node_ip)
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    if c.get("workingDir"):
        args += ["-w", c["workingDir"]]
    args += mount_args(c, mounts, pod)
    command = [expand(x, env) for x in c.get("command") or []]
    cargs = [expand(x, env) for x in c.get("args") or []]
    if command:
        args += ["--entrypoint", command[0], image, *command[1:], *cargs]
    else:
        args += [image, *cargs]
    return args


def dns_aliases(pod, ov):
    """The names Kubernetes' DNS gives the pod: its own under a headless Service that is its
    subdomain, and every Service that selects it."""
    ns, names = ov.ns, []
    forms = lambda base: [base, f"{base}.{ns}", f"{base}.{ns}.svc", f"{base}.{ns}.svc.cluster.local"]
    sub = pod.owner["spec"].get("serviceName") if not pod.job else pod.spec.get("subdomain")
    svc = ov.services.get(sub) if sub else None
    if svc and svc["spec"].get("clusterIP") == "None":
        names += forms(f"{pod.name}.{sub}")
    for sname, s in ov.services.items():
        if matches(s["spec"].get("selector"), pod.labels):
            names += forms(sname)
    return names


# ---- probes ----

def probe(container, p):
    if "exec" not in p:
        log(f"  {container}: only exec probes are run here; {list(p)} taken as passing")
        return True
    try:
        r = docker("exec", container, *p["exec"]["command"], check=False,
                   timeout=p.get("timeoutSeconds", 1) + 5)
        return r.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def state(container):
    r = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
               container, check=False)
    return r.stdout.split() if r.returncode == 0 else ["missing", "0", "0"]


def tail(container, n=25):
    r = docker("logs", "--tail", str(n), container, check=False)
    return "\n".join("    | " + l for l in (r.stdout + r.stderr).strip().splitlines())


def await_pod(pod, deadline):
    """Until the pod is ready (a Job's: succeeded), as the kubelet's probes decide."""
    c = pod.container
    if pod.job:
        while time.time() < deadline:
            status, code, restarts = state(c)
            if status == "exited" and code == "0":
                pod.ready = True
                log(f"  {pod.name}: succeeded")
                return
            limit = pod.owner["spec"].get("backoffLimit", 6)
            if status == "exited" and (pod.spec.get("restartPolicy") == "Never" or int(restarts) >= limit):
                pod.failed = f"exited {code} after {restarts} restarts"
                return
            time.sleep(1)
        pod.failed = "did not finish in time"
        return
    spec = pod.spec["containers"][0]
    startup, ready, live = (spec.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe"))
    started = startup is None
    fails = {"startup": 0, "live": 0}
    begin = time.time()
    due = {k: begin + (p or {}).get("initialDelaySeconds", 0)
           for k, p in (("startup", startup), ("ready", ready), ("live", live))}
    while time.time() < deadline:
        status = state(c)[0]
        if status not in ("running", "restarting"):
            pod.failed = f"container {status}"
            return
        now = time.time()
        if not started and now >= due["startup"]:
            if probe(c, startup):
                started = True
                due["ready"] = due["live"] = now
            else:
                fails["startup"] += 1
                if fails["startup"] >= startup.get("failureThreshold", 3):
                    log(f"  {pod.name}: startup probe failed {fails['startup']} times: restarting it\n{tail(c)}")
                    docker("restart", c, check=False)
                    fails["startup"] = 0
            due["startup"] = now + startup.get("periodSeconds", 10)
        if started and live and now >= due["live"]:
            if probe(c, live):
                fails["live"] = 0
            else:
                fails["live"] += 1
                if fails["live"] >= live.get("failureThreshold", 3):
                    log(f"  {pod.name}: liveness probe failed: restarting it\n{tail(c)}")
                    docker("restart", c, check=False)
                    started, fails["live"] = startup is None, 0
            due["live"] = now + live.get("periodSeconds", 10)
        if started and now >= due["ready"]:
            if ready is None or probe(c, ready):
                pod.ready = True
                log(f"  {pod.name}: ready after {time.time() - begin:.1f} s")
                return
            due["ready"] = now + ready.get("periodSeconds", 10)
        time.sleep(0.5)
    pod.failed = "not ready in time"


# ---- up, down ----

def render(overlay):
    kubectl = shutil.which("kubectl") or shutil.which(
        "kubectl", path=str(Path.home() / ".cache/orbit-venv/bin"))
    if kubectl:
        p = run([kubectl, "kustomize", overlay])
    elif shutil.which("kustomize"):
        p = run(["kustomize", "build", overlay])
    else:
        raise SystemExit("kubectl (or kustomize) is needed to render the overlay: deploy/k8s/get-kubectl.sh")
    return list(yaml.safe_load_all(p.stdout))


def start_pod(pod, ov, proj, node_ip_of):
    init = pod.spec.get("initContainers") or []
    if len(pod.spec["containers"]) != 1:
        raise SystemExit(f"{pod.name}: pods of one container only (this one has "
                         f"{len(pod.spec['containers'])})")
    mounts, _ = pod.mounts
    image_of = lambda c: proj.image or c["image"]
    node_ip = node_ip_of(pod)
    aliases = dns_aliases(pod, ov)
    for c in init:  # in turn, each to completion, at the pod's address
        args = docker_run_args(c, pod, ov, proj, mounts, [], node_ip, image_of(c), "init")
        cid = docker(*args).stdout.strip()
        code = docker("wait", cid).stdout.strip()
        if code != "0":
            raise SystemExit(f"{pod.name}: init container {c['name']} exited {code}\n{tail(cid)}")
        docker("rm", cid)
    c = pod.spec["containers"][0]
    if pod.job:
        policy = pod.spec.get("restartPolicy", "Never")
        restart = "no" if policy == "Never" else f"on-failure:{pod.owner['spec'].get('backoffLimit', 6)}"
    else:
        restart = "always"
    args = docker_run_args(c, pod, ov, proj, mounts, aliases, node_ip, image_of(c), restart)
    docker(*args)
    pod.container = f"{proj.name}-{pod.name}"
    where = f"node address {pod.ip} (hostNetwork)" if pod.host_network else pod.ip
    log(f"  {pod.name}: started at {where}")


def up(args):
    proj = Project(args)
    down(args, quiet=True)
    t0 = time.time()
    ov = Overlay(render(args.overlay))
    pods = ov.pods()
    proj.sdir.mkdir(parents=True, exist_ok=True)
    image = proj.image or pods[0].spec["containers"][0]["image"]
    log(f"{proj.name}: {len(pods)} pods of {args.overlay} in namespace {ov.ns}, image {image}")
    trunk = make_secrets(ov, pods, image, proj.sdir)
    def cidr(v):
        try:
            return ipaddress.ip_network(v, strict=False) if "/" in v else None
        except ValueError:
            return None
    avoid = [n for data in ov.configmaps.values() for v in data.values()
             if isinstance(v, str) and (n := cidr(v.strip())) is not None]
    net = proj.network(args.subnet, avoid)
    hosts = list(net.hosts())
    gateway = str(hosts[0])
    for i, p in enumerate(pods):
        p.ip = str(hosts[9 + i])
    node_ip_of = lambda p: p.ip if p.host_network else gateway
    # Volumes first, as the kubelet prepares them: emptyDirs writable by all, claims the
    # fsGroup's (one helper container for them all).
    prepare = []
    for p in pods:
        p.mounts = volume_mounts(p, ov, proj)
        prepare += p.mounts[1]
    if prepare:
        script, vols = [], []
        for i, (vol, mode, group) in enumerate(prepare):
            docker("volume", "create", "--label", f"{LABEL}={proj.name}", vol)
            vols += ["-v", f"{vol}:/v/{i}"]
            if group is not None:
                script.append(f"chgrp {group} /v/{i}")
            if mode:
                script.append(f"chmod {mode} /v/{i}")
        if script:
            docker("run", "--rm", "--network", "none", "--user", "0", *vols,
                   "--entrypoint", "/bin/sh", image, "-c", " && ".join(script))
    deadline = time.time() + proj.timeout
    # StatefulSets' OrderedReady: a pod starts once the one before it is ready.
    threads = []
    def lifecycle(p, before):
        if before is not None:
            while before.container is None or not (before.ready or before.failed):
                if time.time() > deadline:
                    p.failed = "never started (OrderedReady: the pod before it never got ready)"
                    return
                time.sleep(0.5)
            if before.failed:
                p.failed = f"never started: {before.name} failed"
                return
        try:
            start_pod(p, ov, proj, node_ip_of)
        except SystemExit as e:
            p.failed = str(e)
            return
        await_pod(p, deadline)
    for i, p in enumerate(pods):
        ordered = (not p.job and p.owner["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
                   and p.ordinal > 0)
        t = threading.Thread(target=lifecycle, args=(p, pods[i - 1] if ordered else None))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    for p in pods:
        if p.failed:
            log(f"  {p.name}: NOT READY: {p.failed}")
            if p.container:
                log(tail(p.container))
    ok = all(p.ready for p in pods)
    log(f"{proj.name}: {'all ready' if ok else 'NOT all ready'} in {time.time() - t0:.1f} s")
    print(json.dumps({
        "pods": {p.name: {"ip": p.ip, "container": p.container or f"{proj.name}-{p.name}",
                          "ready": p.ready, "pre_stop": pre_stop(p)} for p in pods},
        "network": proj.name, "subnet": str(net), "gateway": gateway,
        "trunk_secret": trunk, "pki": str(proj.sdir / "pki"),
    }), flush=True)
    return 0 if ok else 1


def pre_stop(pod):
    """The first container's preStop exec command, which the kubelet runs in it before its
    SIGTERM (a caller runs it with `docker exec` to stop the pod as Kubernetes would)."""
    hook = ((pod.spec["containers"][0].get("lifecycle") or {}).get("preStop") or {}).get("exec")
    return hook["command"] if hook else None


def down(args, quiet=False):
    name = args.project
    flt = ["--filter", f"label={LABEL}={name}"]
    ids = docker("ps", "-aq", *flt).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    vols = docker("volume", "ls", "-q", *flt).stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols)
    nets = set(docker("network", "ls", "-q", *flt).stdout.split())
    for n in nets:
        docker("network", "rm", n, check=False)
    shutil.rmtree(state_dir(name), ignore_errors=True)
    if not quiet:
        log(f"{name}: removed {len(ids)} containers, {len(vols)} volumes, {len(nets)} networks")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="render an overlay and run its pods")
    u.add_argument("--overlay", required=True)
    u.add_argument("--project", required=True)
    u.add_argument("--image", help="instead of every container's image (e.g. orbit:test)")
    u.add_argument("--subnet", help="the network's subnet (default: a free /24 in 10.200-249.*)")
    u.add_argument("--timeout", type=float, default=120, help="seconds for every pod to get ready")
    d = sub.add_parser("down", help="remove a project's containers, volumes, network, files")
    d.add_argument("--project", required=True)
    args = ap.parse_args()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", args.project):
        ap.error("--project: lowercase letters, digits, '_', '.', '-'")
    sys.exit(up(args) if args.cmd == "up" else down(args))


if __name__ == "__main__":
    main()
