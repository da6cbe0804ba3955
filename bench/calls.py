#!/usr/bin/env python3
"""Call-rate benchmark: the highest rate each target sustains with < 1% failed calls.

Targets, all measured in the same run with the same SIPp scenarios (anchors/):
  direct       SIPp uac -> SIPp uas, no server (the tool's ceiling)
  kamailio     Kamailio 5.6 transaction-stateful proxy, record-route, 1 worker (the anchor)
  edge         orbitd edge, B2BUA with media relay; INVITEs from a trusted address, unchallenged
  edge-digest  orbitd edge, every INVITE challenged (407) and authenticated with digest

For each target the rate starts at --start calls/s and grows by x1.5 until a run fails, then
bisects twice between the last good and the first bad rate. A run is good when fewer than 1%
of its calls failed and the calls were generated at (nearly) the asked rate. CPU is the
server's user+system time during the run (all Kamailio processes; the orbitd process).

Each target's CPU at its own best step is read at a different rate, so the same run also
measures every target once more at one common rate (--cpu-rate; by default 60% of Kamailio's
best rate, or 60% of the lowest best rate when Kamailio is not among the targets), after all
the searches, and prints its CPU ratio beside the other. That figure counts only when its run
also passed (< 1% failed, on time); a target that fails it is shown as such.

Usage: bench/run.sh calls [--seconds 20] [--start 1000] [--targets direct,kamailio,edge,edge-digest]
                          [--cpu-rate N | --cpu-rate-share 0.6]
"""
import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHORS = os.path.join(HERE, "anchors")
CLK = os.sysconf("SC_CLK_TCK")
BUFF = ["-buff_size", "4194304"]


def cpu_of(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / CLK


def pids_of(root):
    """root and its descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for line in out.split("\n"):
        parts = line.split()
        if len(parts) == 2:
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    seen, todo = [], [root]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children.get(p, []))
    return seen


def wait_port(port, proto="udp", timeout=10):
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = subprocess.run(["ss", "-lnu" if proto == "udp" else "-lnt"], capture_output=True, text=True).stdout
        if f"127.0.0.1:{port} " in out:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}/{proto}")


class Target:
    name = ""
    server_pid = None

    def start(self, work):
        pass

    def stop(self):
        pass

    def addr(self):
        raise NotImplementedError

    def uac_args(self):
        return ["-sf", os.path.join(ANCHORS, "uac_rr.xml"), "-s", "1002"]

    def before_uas(self, work, uas_port):
        pass


class Direct(Target):
    name = "direct"

    def addr(self):
        return f"127.0.0.1:{self.uas_port}"


class Kamailio(Target):
    name = "kamailio"

    def start(self, work):
        cfg = open(os.path.join(ANCHORS, "kamailio.cfg")).read()
        cfg = cfg.replace("127.0.0.1:5070", f"127.0.0.1:{self.uas_port}").replace("127.0.0.1:5060", "127.0.0.1:25060")
        path = os.path.join(work, "kamailio.cfg")
        open(path, "w").write(cfg)
        rundir = os.path.join(work, "kam-run")
        os.makedirs(rundir, exist_ok=True)
        self.proc = subprocess.Popen(
            ["kamailio", "-f", path, "-A", "CHILDREN=1", "-DD", "-E", "-m", "1024", "-M", "32",
             "-x", "tlsf", "-X", "tlsf", "-Y", rundir, "-P", os.path.join(rundir, "k.pid")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "kamailio.log"), "w"))
        wait_port(25060)
        time.sleep(0.5)
        self.server_pid = self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def addr(self):
        return "127.0.0.1:25060"


class Edge(Target):
    exts = (1001, 1002)
    callee = "1002"

    def __init__(self, digest, orbitd):
        self.digest = digest
        self.orbitd = orbitd
        self.name = "edge-digest" if digest else "edge"

    def start(self, work):
        exts = "\n".join(f'"{n}" = {{ password = "pw{n}" }}' for n in self.exts)
        trusted = "[]" if self.digest else '["127.0.0.1"]'
        cfg = f"""[edge]
site = "bench"
[edge.sip]
listen = "127.0.0.1:35060"
[edge.media]
ip = "127.0.0.1"
port_min = 20000
port_max = 29999
[edge.auth]
algorithms = ["MD5"]
trusted = {trusted}
[edge.limits]
requests_per_sec = 1000000
burst = 1000000
# Every benchmark call is extension 1001's: lift the per-user share, as for a load-test user.
calls_per_user = 1000000
[edge.tenant]
domain = "orbit.local"
any_host = true
[edge.tenant.extensions]
{exts}
{self.config_extra()}
"""
        path = os.path.join(work, f"{self.name}.toml")
        open(path, "w").write(cfg)
        self.proc = subprocess.Popen([self.orbitd, "edge", "--config", path],
                                     env={**os.environ, "RUST_LOG": "warn"},
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(work, f"{self.name}.log"), "w"))
        wait_port(35060)
        self.server_pid = self.proc.pid

    def config_extra(self):
        return ""

    def before_uas(self, work, uas_port):
        # The callee registers from the port its SIPp UAS will answer on.
        register("127.0.0.1:35060", self.callee, uas_port, work)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def addr(self):
        return "127.0.0.1:35060"

    def uac_args(self):
        if self.digest:
            # The edge checks the digest uri against the Request-URI; SIPp's default names
            # only host:port.
            return ["-sf", os.path.join(HERE, "uac_auth_rr.xml"), "-s", self.callee,
                    "-au", "1001", "-ap", "pw1001", "-key", "authuser", "1001",
                    "-auth_uri", f"{self.callee}@{self.addr()}"]
        return ["-sf", os.path.join(ANCHORS, "uac_rr.xml"), "-s", self.callee]


def register(addr, user, port, work):
    """`user` (password pw<user>) registers at `addr` from `port`, where its SIPp UAS will answer."""
    r = subprocess.run(["sipp", addr, "-sf", os.path.join(HERE, "..", "crates/orbitd/tests/sipp/register.xml"),
                        "-s", user, "-au", user, "-ap", f"pw{user}", "-key", "expires", "3600",
                        "-m", "1", "-p", str(port), "-i", "127.0.0.1", "-nostdin", "-timeout", "10s", "-timeout_error"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    if r.returncode != 0:
        raise RuntimeError("registering the callee failed")


def run_rate(t, rate, seconds, work):
    """One run at `rate` calls/s for `seconds`. Returns dict with ok, calls/s, cpu per 1k."""
    uas_port = t.uas_port
    uas = subprocess.Popen(["sipp", "-sf", os.path.join(ANCHORS, "uas_rr_ring20.xml"), "-p", str(uas_port),
                            "-i", "127.0.0.1", "-nostdin", "-bg"] + BUFF,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    uas.wait()
    time.sleep(0.3)
    total = int(rate * seconds)
    stat = os.path.join(work, f"{t.name}-{rate}.csv")
    pids = pids_of(t.server_pid) if t.server_pid else []
    c0 = cpu_of(pids)
    t0 = time.time()
    uac = subprocess.Popen(["sipp", t.addr(), "-i", "127.0.0.1", "-nostdin", "-r", str(rate), "-rp", "1000",
                            "-m", str(total), "-timeout", f"{seconds + 40}s", "-trace_stat", "-stf", stat, "-fd", "1"]
                           + BUFF + t.uac_args(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    try:
        # SIPp's own -timeout does not always fire when calls hang in an overload; bound it here.
        uac.wait(seconds + 60)
    except subprocess.TimeoutExpired:
        uac.kill()
        uac.wait()
    wall = time.time() - t0
    c1 = cpu_of(pids)
    subprocess.run(["pkill", "-f", f"-p {uas_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["pkill", "-f", f"uas_rr_ring20.xml -p {uas_port}"])
    time.sleep(0.5)
    ok_calls = failed = 0
    try:
        rows = list(csv.reader(open(stat), delimiter=";"))
        head, last = rows[0], rows[-1]
        ok_calls = int(last[head.index("SuccessfulCall(C)")])
        failed = int(last[head.index("FailedCall(C)")])
    except (FileNotFoundError, IndexError, ValueError):
        failed = total
    done = ok_calls + failed
    fail_ratio = (failed + (total - done)) / total
    # Generated at the asked rate: all calls placed within the run time plus a small slack.
    on_time = wall <= seconds * 1.15 + 10
    cps = ok_calls / seconds
    cpu = (c1 - c0) / max(ok_calls, 1) * 1000 if pids else None
    good = fail_ratio < 0.01 and on_time
    print(f"  {t.name:12} rate {rate:6} -> ok {ok_calls:7} failed {failed + total - done:6} "
          f"({fail_ratio * 100:5.2f}%) wall {wall:5.1f}s"
          + (f" cpu/1k {cpu:6.3f}s" if cpu is not None else "") + ("" if good else "  FAIL"), flush=True)
    return {"good": good, "cps": cps, "cpu": cpu, "rate": rate}


def search_rates(run, start, cap, min_step=100):
    """The highest passing rate: grow by x1.5 from `start` until a run fails, then bisect twice
    between the last good and the first bad rate. `run(rate)` returns a dict with "good"."""
    best, bad = None, None
    rate = start
    while rate <= cap:
        r = run(rate)
        if r["good"]:
            best = r
            rate = int(rate * 1.5)
        else:
            bad = rate
            break
    if best is None:
        return None
    lo, hi = best["rate"], bad
    for _ in range(2):
        if hi is None or hi - lo <= max(min_step, lo // 20):
            break
        mid = (lo + hi) // 2
        r = run(mid)
        if r["good"]:
            best, lo = r, mid
        else:
            hi = mid
    return best


def search(t, start, seconds, work, cap):
    return search_rates(lambda rate: run_rate(t, rate, seconds, work), start, cap)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--start", type=int, default=1000)
    ap.add_argument("--cap", type=int, default=12000)
    ap.add_argument("--targets", default="direct,kamailio,edge,edge-digest")
    ap.add_argument("--orbitd", required=True)
    ap.add_argument("--cpu-rate", type=int, default=None,
                    help="the common rate (calls/s) at which every target's CPU is also measured; "
                         "default: --cpu-rate-share of Kamailio's best rate (or of the lowest best rate)")
    ap.add_argument("--cpu-rate-share", type=float, default=0.6)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="orbit-bench-")
    targets = {"direct": Direct(), "kamailio": Kamailio(), "edge": Edge(False, a.orbitd), "edge-digest": Edge(True, a.orbitd)}
    port = 45070
    results = {}
    print(f"call-rate search: {a.seconds} s per step, < 1% failed calls; work dir {work}")
    names = a.targets.split(",")
    for name in names:
        t = targets[name]
        t.uas_port = port
        port += 10
        t.start(work)
        try:
            t.before_uas(work, t.uas_port)
            results[name] = search(t, a.start, a.seconds, work, a.cap)
        finally:
            t.stop()
    # One common rate for every target's CPU: the ratio at each target's own best step compares
    # different rates (a server's CPU per call falls as its batches grow with the rate).
    cpu_rate = a.cpu_rate
    if cpu_rate is None:
        anchor = results.get("kamailio")
        bests = [r["rate"] for r in results.values() if r is not None]
        base = anchor["rate"] if anchor else (min(bests) if bests else None)
        cpu_rate = int(base * a.cpu_rate_share) if base else None
    fixed = {}
    if cpu_rate:
        print(f"\nCPU at one common rate for every target: {cpu_rate} calls/s, {a.seconds} s")
        for name in names:
            t = targets[name]
            t.start(work)
            try:
                t.before_uas(work, t.uas_port)
                fixed[name] = run_rate(t, cpu_rate, a.seconds, work)
            finally:
                t.stop()
    print()
    print(f"{'target':12} {'calls/s':>9} {'CPU s/1k calls':>15} {'vs kamailio rate':>17} {'vs kamailio CPU':>16}"
          f"   {'CPU s/1k @' + str(cpu_rate or '-'):>15} {'vs kamailio CPU':>16}")
    k = results.get("kamailio")
    kf = fixed.get("kamailio")
    kf = kf if kf and kf["good"] and kf["cpu"] else None
    for name in names:
        r = results.get(name)
        f = fixed.get(name)
        if f is None:
            fc, fv = "-", "-"
        elif not f["good"]:
            fc, fv = "FAIL", "-"
        else:
            fc = f"{f['cpu']:.3f}" if f["cpu"] is not None else "-"
            fv = f"{f['cpu'] / kf['cpu']:.2f}x" if kf and f["cpu"] is not None else "-"
        if r is None:
            print(f"{name:12} {'none':>9} {'':>15} {'':>17} {'':>16}   {fc:>15} {fv:>16}")
            continue
        cpu = f"{r['cpu']:.3f}" if r["cpu"] is not None else "-"
        vr = f"{r['cps'] / k['cps']:.2f}x" if k else "-"
        vc = f"{r['cpu'] / k['cpu']:.2f}x" if k and r["cpu"] is not None and k["cpu"] else "-"
        print(f"{name:12} {r['cps']:9.0f} {cpu:>15} {vr:>17} {vc:>16}   {fc:>15} {fv:>16}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
