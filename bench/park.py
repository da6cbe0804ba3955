#!/usr/bin/env python3
"""Park + retrieve benchmark: the highest rate of whole park cycles the edge sustains with < 1%
failed cycles, the retrieve INVITE -> 200 latency, and, as the anchor measured in the same run,
the plain call rate of the same edge (a cycle is three dialogs: the call, the REFER with its
NOTIFY and BYE, and the retrieve).

One cycle, all SIP over loopback UDP, SIPp on every side:
  park_parker.xml    1001 calls 1002 (a SIPp UAS answers), REFERs it to slot 7<n>, takes the
                     202, NOTIFY and BYE, then tells its 3PCC twin the slot
  park_retriever.xml dials the slot (timed: "retrieve"), ACKs, hangs up; 1002 gets the BYE

Usage: bench/run.sh park [--seconds 10] [--start 400]
"""
import argparse
import csv
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import calls

HERE = os.path.dirname(os.path.abspath(__file__))


class ParkEdge(calls.Edge):
    """The edge with a lot big enough for explicit slots 7<call number> (SIPp cannot pad or
    take a modulo), and extensions above it."""
    exts = (800001, 800002, 800003)
    callee = "800002"

    def __init__(self, orbitd):
        super().__init__(False, orbitd)
        self.name = "edge-park"

    def config_extra(self):
        return '[[edge.tenant.lots]]\npark_ext = "69"\nslots = "70-799999"\n'


def sipp_counts(path, total):
    """(successful, failed) calls from a SIPp -trace_stat file; a missing or unreadable one
    counts every call as failed."""
    try:
        rows = list(csv.reader(open(path), delimiter=";"))
        head, last = rows[0], rows[-1]
        return int(last[head.index("SuccessfulCall(C)")]), int(last[head.index("FailedCall(C)")])
    except (FileNotFoundError, IndexError, ValueError):
        return 0, total


def response_times(rdir, name):
    """The response times (ms) named `name` in the SIPp -trace_rtt files under `rdir`."""
    lat = []
    for f in glob.glob(os.path.join(rdir, "*_rtt.csv")):
        for row in csv.reader(open(f), delimiter=";"):
            if len(row) >= 3 and row[2].strip() == name:
                try:
                    lat.append(float(row[1]))
                except ValueError:
                    pass
    return lat


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def run_cycles(t, rate, seconds, work, twin_port, retriever=None, label=None):
    """One run at `rate` cycles/s; the retriever dials `retriever` (default: the parker's edge)."""
    uas = subprocess.Popen(["sipp", "-sf", os.path.join(calls.ANCHORS, "uas_rr_ring20.xml"), "-p", str(t.uas_port),
                            "-i", "127.0.0.1", "-nostdin", "-bg"] + calls.BUFF,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    uas.wait()
    total = int(rate * seconds)
    rdir = os.path.join(work, f"r{rate}")
    os.makedirs(rdir, exist_ok=True)
    common = ["-i", "127.0.0.1", "-nostdin", "-m", str(total), "-timeout", f"{seconds + 40}s",
              "-3pcc", f"127.0.0.1:{twin_port}", "-trace_stat", "-fd", "1"] + calls.BUFF
    carol = subprocess.Popen(["sipp", retriever or t.addr(), "-sf", os.path.join(HERE, "park_retriever.xml"),
                              "-stf", os.path.join(rdir, "carol.csv"), "-trace_rtt", "-rtt_freq", "50", "-p", str(twin_port + 1)]
                             + common, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=rdir)
    time.sleep(0.5)
    pids = t.pids() if hasattr(t, "pids") else calls.pids_of(t.server_pid)
    c0 = calls.cpu_of(pids)
    t0 = time.time()
    bob = subprocess.Popen(["sipp", t.addr(), "-sf", os.path.join(HERE, "park_parker.xml"), "-s", t.callee,
                            "-r", str(rate), "-rp", "1000", "-stf", os.path.join(rdir, "bob.csv"), "-p", str(twin_port + 2)]
                           + common, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=rdir)
    for p in (bob, carol):
        try:
            p.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    wall = time.time() - t0
    c1 = calls.cpu_of(pids)
    subprocess.run(["pkill", "-f", f"uas_rr_ring20.xml -p {t.uas_port}"])
    time.sleep(0.5)

    bob_ok, bob_failed = sipp_counts(os.path.join(rdir, "bob.csv"), total)
    ok, failed = sipp_counts(os.path.join(rdir, "carol.csv"), total)
    lat = response_times(rdir, "retrieve")
    fail_ratio = (total - ok) / total
    on_time = wall <= seconds * 1.15 + 10
    good = fail_ratio < 0.01 and on_time
    cpu = (c1 - c0) / max(ok, 1) * 1000
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    print(f"  {label or t.name:12} rate {rate:6} -> cycles ok {ok:7} (parks ok {bob_ok}, failed {bob_failed}) "
          f"failed {fail_ratio * 100:5.2f}% wall {wall:5.1f}s cpu/1k {cpu:6.3f}s "
          f"retrieve p50 {p50:.2f} ms p99 {p99:.2f} ms (n={len(lat)})" + ("" if good else "  FAIL"), flush=True)
    return {"good": good, "cps": ok / seconds, "cpu": cpu, "rate": rate, "p50": p50, "p99": p99}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--start", type=int, default=400)
    ap.add_argument("--cap", type=int, default=8000)
    ap.add_argument("--orbitd", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="orbit-bench-park-")
    print(f"park cycle search: {a.seconds} s per step, < 1% failed cycles; work dir {work}")
    t = ParkEdge(a.orbitd)
    t.uas_port = 46070
    t.start(work)
    try:
        t.before_uas(work, t.uas_port)
        plain = calls.search(t, 1000, a.seconds, work, 12000)
        cycles = calls.search_rates(lambda r: run_cycles(t, r, a.seconds, work, 47070), a.start, a.cap, min_step=50)
    finally:
        t.stop()
    print()
    if cycles is None or plain is None:
        print("no passing rate")
        return 1
    print(f"{'':28} {'per s':>8} {'CPU s/1k':>9} {'retrieve p50':>13} {'p99':>9}")
    print(f"{'edge plain calls (anchor)':28} {plain['cps']:8.0f} {plain['cpu']:9.3f}")
    print(f"{'edge park+retrieve cycles':28} {cycles['cps']:8.0f} {cycles['cpu']:9.3f} "
          f"{cycles['p50']:10.2f} ms {cycles['p99']:6.2f} ms")
    print(f"cycles / plain calls: {cycles['cps'] / plain['cps']:.2f}x rate, "
          f"{cycles['cpu'] / plain['cpu']:.2f}x CPU per unit")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
