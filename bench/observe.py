#!/usr/bin/env python3
"""What observing costs the calls, on three `orbitd run` processes (a registry voter and an
edge each, as deployed), SIP over loopback UDP. In the same run, each on a fresh cluster:

  anchor        the highest plain call rate through site A, metrics and traces off
  observed      the same with `[telemetry] metrics_listen` on every process, each scraped once
                a second (as Prometheus would, the whole /metrics text), and traces sent over
                OTLP/gRPC at `--sampling` (default 1%) to a real receiver (`orbit-bench
                otlp-sink`, which counts the spans it gets)

Usage: bench/run.sh observe [--seconds 10] [--sampling 0.01]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

import calls
import sites

OTLP = 44317


def scrape(stop):
    """Scrape every process once a second until `stop`: (scrapes, failed, bytes of the last)."""
    made, failed, size = 0, 0, 0
    while not stop.wait(1.0):
        for port in sites.METRICS:
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
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="orbit-bench-observe-")
    print(f"observe benchmark: {a.seconds} s per step, < 1% failed; work dir {work}")
    found, load = {}, {}
    for observed in (False, True):
        t = sites.Sites(a.orbitd)
        t.uas_port = 46070
        t.telemetry = observed
        sink = None
        if observed:
            sink = subprocess.Popen([a.bench, "otlp-sink", "--listen", f"127.0.0.1:{OTLP}"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            t.otlp = f"http://127.0.0.1:{OTLP}"
            t.sampling = a.sampling
        cwork = os.path.join(work, "observed" if observed else "anchor")
        os.makedirs(cwork)
        t.start(cwork)
        stop = threading.Event()
        result = {}
        scraper = None
        try:
            t.before_uas(cwork, t.uas_port)
            if observed:
                scraper = threading.Thread(
                    target=lambda: result.update(zip(("made", "failed", "bytes"), scrape(stop))))
                scraper.start()
            found[observed] = calls.search(t, 500, a.seconds, cwork, 12000)
        finally:
            stop.set()
            if scraper:
                scraper.join()
            t.stop()
            if sink:
                # The processes flushed their spans as they stopped; then the receiver's count.
                out, _ = sink.communicate(timeout=30)
                result["spans"] = out.strip()
        load[observed] = result
    print()
    if None in found.values():
        print("no passing rate")
        return 1
    print(f"{'':44} {'per s':>8} {'CPU s/1k':>9}")
    print(f"{'plain calls, metrics off (anchor)':44} {found[False]['cps']:8.0f} {found[False]['cpu']:9.3f}")
    label = f"plain calls, metrics + traces at {a.sampling:g}"
    print(f"{label:44} {found[True]['cps']:8.0f} {found[True]['cpu']:9.3f}")
    print(f"scrapes made {load[True].get('made', 0)}, failed {load[True].get('failed', 0)}, "
          f"last one {load[True].get('bytes', 0)} bytes")
    print(f"OTLP receiver: {load[True].get('spans', 'nothing')} (the whole observed run)")
    print(f"observed / not: {found[True]['cps'] / found[False]['cps']:.2f}x rate, "
          f"{found[True]['cpu'] / found[False]['cpu']:.2f}x CPU per call")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
