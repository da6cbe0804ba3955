#!/usr/bin/env python3
"""Admin reads against calls, on three `orbitd run` processes (a registry voter and an edge each,
as deployed), SIP over loopback UDP. In the same run, each on a fresh cluster:

  anchor       the highest plain call rate through site A
  with reads   the same, while an operator's tools read the admin API of site A's registry
               node: `orbitctl parked list --watch` held open the whole time, and once a second
               `orbitctl parked list` and `orbitctl cluster status`, and `orbitctl calls list`
               from site A's edge (the calls under load: each a new process, as a script or a
               dashboard would run them)

Usage: bench/run.sh admin [--seconds 10]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import calls
import sites


def reads(orbitctl, work, stop):
    """The operator's load until `stop` is set; how many reads were made and how many failed."""
    endpoint = ["--endpoint", f"127.0.0.1:{sites.GRPC[0]}"]
    watch = subprocess.Popen([orbitctl] + endpoint + ["parked", "list", "--watch"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    made, failed = 0, 0
    edge = ["--endpoint", f"127.0.0.1:{sites.EDGE_ADMIN[0]}"]
    while not stop.wait(1.0):
        for args in (endpoint + ["parked", "list"], endpoint + ["cluster", "status"],
                     edge + ["calls", "list"]):
            made += 1
            r = subprocess.run([orbitctl] + args, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=work, timeout=10)
            failed += r.returncode != 0
    watch.kill()
    watch.wait()
    return made, failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--orbitd", required=True)
    ap.add_argument("--orbitctl", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="orbit-bench-admin-")
    print(f"admin reads benchmark: {a.seconds} s per step, < 1% failed; work dir {work}")
    found = {}
    load = {}
    for with_reads in (False, True):
        t = sites.Sites(a.orbitd)
        t.uas_port = 46070
        cwork = os.path.join(work, "reads" if with_reads else "anchor")
        os.makedirs(cwork)
        t.start(cwork)
        stop = threading.Event()
        result = {}
        reader = None
        try:
            t.before_uas(cwork, t.uas_port)
            if with_reads:
                reader = threading.Thread(
                    target=lambda: result.update(zip(("made", "failed"), reads(a.orbitctl, cwork, stop))))
                reader.start()
            found[with_reads] = calls.search(t, 500, a.seconds, cwork, 12000)
        finally:
            stop.set()
            if reader:
                reader.join()
            t.stop()
        load[with_reads] = result
    print()
    if None in found.values():
        print("no passing rate")
        return 1
    print(f"{'':44} {'per s':>8} {'CPU s/1k':>9}")
    print(f"{'plain calls (anchor)':44} {found[False]['cps']:8.0f} {found[False]['cpu']:9.3f}")
    print(f"{'plain calls, admin reads running':44} {found[True]['cps']:8.0f} {found[True]['cpu']:9.3f}")
    print(f"admin reads made {load[True].get('made', 0)}, failed {load[True].get('failed', 0)}, "
          f"one watch held throughout")
    print(f"with reads / without: {found[True]['cps'] / found[False]['cps']:.2f}x rate, "
          f"{found[True]['cpu'] / found[False]['cpu']:.2f}x CPU per call")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
