#!/usr/bin/env python3
"""Datagrams the edge sends and receives per park + retrieve cycle and per plain call: one slow
step of each (the park benchmark's edge and scenarios), with `strace` attached to the edge,
counting the SIP messages in its send and receive system calls. What a cycle carries sets the
floor of its cost against a plain call's (bench/park.py compares their rates).

Usage: python3 bench/datagrams.py --orbitd PATH [--rate 20] [--seconds 5]
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import calls
import park

# A SIP message in a send or receive system call's buffer: its first line's first word(s).
MESSAGE = re.compile(r'(?:iov_base=|recvfrom\(\d+, )"((?:SIP/2\.0 \d+)|[A-Z]+) ')


def count(trace):
    sent, received = collections.Counter(), collections.Counter()
    for line in open(trace):
        call = re.search(r"\b(sendmmsg|sendto|sendmsg|recvfrom|recvmsg|recvmmsg)\(", line)
        if not call or "EAGAIN" in line:
            continue
        side = received if call.group(1).startswith("recv") else sent
        for m in MESSAGE.finditer(line):
            side[m.group(1)] += 1
    return sent, received


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orbitd", required=True)
    ap.add_argument("--rate", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    if not shutil.which("strace"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "strace"], check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="orbit-datagrams-")
    units = a.rate * a.seconds
    for mode in ("plain", "park"):
        t = park.ParkEdge(a.orbitd)
        t.uas_port = 46270
        t.start(work)
        trace = os.path.join(work, f"{mode}.strace")
        try:
            t.before_uas(work, t.uas_port)
            st = subprocess.Popen(["strace", "-f", "-qq", "-s", "40", "-e",
                                   "trace=sendmmsg,sendto,sendmsg,recvfrom,recvmsg,recvmmsg",
                                   "-o", trace, "-p", str(t.proc.pid)])
            time.sleep(1)
            if mode == "park":
                park.run_cycles(t, a.rate, a.seconds, work, 47270)
            else:
                calls.run_rate(t, a.rate, a.seconds, work)
            st.terminate()
            st.wait()
        finally:
            t.stop()
        sent, received = count(trace)
        unit = "cycle" if mode == "park" else "call"
        print(f"{mode:5} per {unit}: sent {sum(sent.values()) / units:5.2f}, received "
              f"{sum(received.values()) / units:5.2f}  sent {dict(sorted((k, round(v / units, 2)) for k, v in sent.items()))}  "
              f"received {dict(sorted((k, round(v / units, 2)) for k, v in received.items()))}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
