#!/usr/bin/env python3
"""What observing costs the calls, on three `orbitd run` processes (a registry voter and an
edge each, as deployed), SIP over loopback UDP. Two such clusters, started side by side:

  anchor        metrics and traces off
  observed      `[telemetry] metrics_listen` on every process, each scraped once a second (as
                Prometheus would, the whole /metrics text), and traces sent over OTLP/gRPC at
                `--sampling` (default 1%) to a real receiver (`orbit-bench otlp-sink`, which
                counts the spans it gets)

Plain calls go through site A of one cluster at a time (the other idles). First the highest
call rate of each (< 1% failed; search steps, ±10%); then CPU per call of site A's process at
one common rate (`--cpu-rate`, below both best rates), the two clusters taking turns for
`--cpu-runs` rounds, so that the machine's drift falls on both alike: that figure resolves a
few percent, the search's steps do not. With `perf` on the machine, each cluster's last turn
is also sampled (`perf record`, software clock), and the share of site A's samples spent in
the tracing and metrics code is printed: what the observing itself costs, apart from noise.

Usage: bench/run.sh observe [--seconds 10] [--sampling 0.01] [--cpu-rate 3000] [--cpu-runs 4]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request

import calls
import sites

OTLP = 44317
# Symbols of the observing code, by what they serve.
KINDS = {"tracing": ("tracing", "opentelemetry", "sharded_slab", "orbit_trace"),
         "metrics": ("metrics", "prometheus")}


def profiled(t, run):
    """`run()` with site A's process sampled by perf, if perf is here: (run's result, the
    share of samples per kind of KINDS, in %) or (result, None)."""
    if not shutil.which("perf"):
        return run(), None
    data = os.path.join(t.work, "perf.data")
    perf = subprocess.Popen(["perf", "record", "-F", "999", "-o", data, "-p", str(t.procs[0].pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = run()
    finally:
        perf.send_signal(2)
        perf.wait()
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio"],
                            capture_output=True, text=True).stdout
    shares = {k: 0.0 for k in KINDS}
    for line in report.splitlines():
        if line.startswith("#") or "%" not in line:
            continue
        pct, _, sym = line.strip().partition("%")
        for kind, words in KINDS.items():
            if any(w in sym for w in words):
                shares[kind] += float(pct)
                break
    return result, shares


def scrape(ports, stop):
    """Scrape every process once a second until `stop`: (scrapes, failed, bytes of the last)."""
    made, failed, size = 0, 0, 0
    while not stop.wait(1.0):
        for port in ports:
            made += 1
            try:
                size = len(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
            except OSError:
                failed += 1
    return made, failed, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--orbitd", required=True)
    ap.add_argument("--bench", required=True, help="orbit-bench, for its OTLP receiver")
    ap.add_argument("--sampling", type=float, default=0.01)
    ap.add_argument("--cpu-rate", type=int, default=3000)
    ap.add_argument("--cpu-runs", type=int, default=4)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="orbit-bench-observe-")
    print(f"observe benchmark: {a.seconds} s per step, < 1% failed; work dir {work}")
    anchor, observed = sites.Sites(a.orbitd), sites.Sites(a.orbitd)
    anchor.uas_port, observed.uas_port = 46070, 46080
    observed.offset, observed.media_base = 200, 10000
    observed.telemetry = True
    observed.otlp, observed.sampling = f"http://127.0.0.1:{OTLP}", a.sampling
    anchor.name, observed.name = "anchor", "observed"
    sink = subprocess.Popen([a.bench, "otlp-sink", "--listen", f"127.0.0.1:{OTLP}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stop = threading.Event()
    load = {}
    scraper = None
    started = []
    found, fixed, shares = {}, {False: [], True: []}, {}
    try:
        for t in (anchor, observed):
            cwork = os.path.join(work, t.name)
            os.makedirs(cwork)
            t.work = cwork
            t.start(cwork)
            started.append(t)
            t.before_uas(cwork, t.uas_port)
        scraper = threading.Thread(
            target=lambda: load.update(zip(("made", "failed", "bytes"), scrape(observed.metrics_ports(), stop))))
        scraper.start()
        for is_observed, t in ((False, anchor), (True, observed)):
            found[is_observed] = calls.search(t, 500, a.seconds, t.work, 12000)
        print(f"  at the common rate, taking turns, {a.cpu_runs} x {a.seconds} s each:", flush=True)
        for turn in range(a.cpu_runs):
            for is_observed, t in ((False, anchor), (True, observed)):
                def run():
                    return calls.run_rate(t, a.cpu_rate, a.seconds, t.work)
                if turn == a.cpu_runs - 1:
                    r, shares[is_observed] = profiled(t, run)
                else:
                    r = run()
                fixed[is_observed].append(r)
    finally:
        stop.set()
        if scraper:
            scraper.join()
        for t in started:
            t.stop()
        # The processes flushed their spans as they stopped; then the receiver's count.
        out, _ = sink.communicate(timeout=30)
        load["spans"] = out.strip()
    print()
    if None in found.values():
        print("no passing rate")
        return 1
    print(f"{'':44} {'per s':>8} {'CPU s/1k':>9}")
    print(f"{'plain calls, metrics off (anchor)':44} {found[False]['cps']:8.0f} {found[False]['cpu']:9.3f}")
    label = f"plain calls, metrics + traces at {a.sampling:g}"
    print(f"{label:44} {found[True]['cps']:8.0f} {found[True]['cpu']:9.3f}")
    print(f"scrapes made {load.get('made', 0)}, failed {load.get('failed', 0)}, "
          f"last one {load.get('bytes', 0)} bytes")
    print(f"OTLP receiver: {load.get('spans', 'nothing')} (the whole observed run)")
    print(f"observed / not: {found[True]['cps'] / found[False]['cps']:.2f}x rate (search steps), "
          f"{found[True]['cpu'] / found[False]['cpu']:.2f}x CPU per call (each at its best rate)")
    # Site A's CPU per call at the common rate: the median of each cluster's turns.
    cpu = {}
    for is_observed, label in ((False, "anchor"), (True, "observed")):
        runs = fixed[is_observed]
        bad = [r for r in runs if not r["good"]]
        cpu[is_observed] = statistics.median(r["cpu"] for r in runs)
        each = ", ".join(f"{r['cpu']:.3f}" for r in runs)
        print(f"at {a.cpu_rate}/s, {label:9} CPU s/1k median {cpu[is_observed]:.3f} (turns: {each})"
              + (f"  {len(bad)} turn(s) FAILED" if bad else ""))
    print(f"observed / not at {a.cpu_rate}/s: {cpu[True] / cpu[False]:.3f}x CPU per call")
    for is_observed, label in ((False, "anchor"), (True, "observed")):
        sh = shares.get(is_observed)
        if sh:
            print(f"site A's perf samples in the last turn, {label:9}: "
                  + ", ".join(f"{k} {v:.1f}%" for k, v in sh.items()))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
