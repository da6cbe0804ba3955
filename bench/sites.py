#!/usr/bin/env python3
"""Park + retrieve across sites: three `orbitd run` processes (a registry voter and an edge each,
as deployed), the parker and the parked callee at site A, the retriever at site B (its claim
is ordered by the registry, then the call is fetched over the signed trunk, media through both
relays). Anchors measured in the same run on the same processes: plain calls at site A, and
park + retrieve with the retriever at site A (same cycle, registry, no trunk).

Usage: bench/run.sh sites [--seconds 10] [--start 200]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import calls
import park

SIP = (35060, 35070, 35080)
GRPC = (45051, 45052, 45053)
# Each edge's admin listener (calls, registrations, health).
EDGE_ADMIN = (45061, 45062, 45063)
# Each process's metrics listener, when `telemetry` is set.
METRICS = (45081, 45082, 45083)
NAMES = ("site-a", "site-b", "site-c")


class Sites(park.ParkEdge):
    """Three sites; calls.Edge's interface addresses site A."""

    def __init__(self, orbitd):
        super().__init__(orbitd)
        self.name = "site-a"
        # Serve metrics at METRICS ([telemetry] metrics_listen).
        self.telemetry = False
        # Send spans to this OTLP/gRPC receiver (http://host:port), sampling `sampling`.
        self.otlp = None
        self.sampling = 1.0
        # Added to every port, and the relays' ports from `media_base`: two clusters at once.
        self.offset = 0
        self.media_base = 20000

    def port(self, ports, i):
        return ports[i] + self.offset

    def metrics_ports(self):
        return [self.port(METRICS, i) for i in range(3)]

    def start(self, work):
        exts = "\n".join(f'"{n}" = {{ password = "pw{n}" }}' for n in self.exts)
        self.procs = []
        for i in range(3):
            nodes = ", ".join(f'"127.0.0.1:{self.port(GRPC, j)}"' for j in [i] + [j for j in range(3) if j != i])
            peers = "".join(f'[[edge.trunk.peers]]\nsite = "{NAMES[j]}"\naddr = "127.0.0.1:{self.port(SIP, j)}"\n'
                            for j in range(3) if j != i)
            telemetry = (f'[telemetry]\nmetrics_listen = "127.0.0.1:{self.port(METRICS, i)}"\n'
                         if self.telemetry else "")
            if self.otlp:
                telemetry += (("" if self.telemetry else "[telemetry]\n")
                              + f'otlp_endpoint = "{self.otlp}"\ntrace_sampling = {self.sampling}\n')
            cfg = f"""{telemetry}[registry]
id = {i + 1}
listen = "127.0.0.1:{self.port(GRPC, i)}"
data_dir = "{work}/registry-{i + 1}"
[edge]
site = "{NAMES[i]}"
[edge.sip]
listen = "127.0.0.1:{self.port(SIP, i)}"
[edge.media]
ip = "127.0.0.1"
port_min = {self.media_base + 3000 * i}
port_max = {self.media_base + 2999 + 3000 * i}
[edge.auth]
algorithms = ["MD5"]
trusted = ["127.0.0.1"]
[edge.limits]
requests_per_sec = 1000000
burst = 1000000
[edge.registry]
nodes = [{nodes}]
[edge.admin]
listen = "127.0.0.1:{self.port(EDGE_ADMIN, i)}"
[edge.trunk]
secret = "benchmark-trunk-secret-0123456789"
{peers}
[edge.tenant]
domain = "orbit.local"
any_host = true
[edge.tenant.extensions]
{exts}
{self.config_extra()}
"""
            path = os.path.join(work, f"{NAMES[i]}.toml")
            open(path, "w").write(cfg)
            self.procs.append(subprocess.Popen([self.orbitd, "run", "--config", path],
                                               env={**os.environ, "RUST_LOG": "warn"},
                                               stdout=subprocess.DEVNULL,
                                               stderr=open(os.path.join(work, f"{NAMES[i]}.log"), "w")))
        for i in range(3):
            calls.wait_port(self.port(SIP, i))
        members = [f"{i + 1}=127.0.0.1:{self.port(GRPC, i)}" for i in range(3)]
        subprocess.run([self.orbitd, "registry", "init", "--at", f"127.0.0.1:{self.port(GRPC, 0)}"] + members,
                       check=True, stdout=subprocess.DEVNULL)
        time.sleep(3)  # leases and lots committed
        self.server_pid = self.procs[0].pid

    def pids(self):
        return [p.pid for p in self.procs]

    def addr(self):
        return f"127.0.0.1:{self.port(SIP, 0)}"

    def before_uas(self, work, uas_port):
        # The callee registers at site A from the port its SIPp UAS will answer on.
        calls.register(self.addr(), self.callee, uas_port, work)

    def stop(self):
        for p in self.procs:
            p.send_signal(2)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--start", type=int, default=200)
    ap.add_argument("--cap", type=int, default=8000)
    ap.add_argument("--orbitd", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="orbit-bench-sites-")
    print(f"cross-site park cycle search: {a.seconds} s per step, < 1% failed cycles; work dir {work}")
    t = Sites(a.orbitd)
    t.uas_port = 46070
    t.start(work)
    try:
        t.before_uas(work, t.uas_port)
        plain = calls.search(t, 500, a.seconds, work, 12000)
        local = calls.search_rates(lambda r: park.run_cycles(t, r, a.seconds, work, 47070, label="same site"),
                                   a.start, a.cap, min_step=50)
        across = calls.search_rates(lambda r: park.run_cycles(t, r, a.seconds, work, 47170,
                                                              retriever=f"127.0.0.1:{SIP[1]}", label="A to B"),
                                    a.start, a.cap, min_step=50)
    finally:
        t.stop()
    print()
    if None in (plain, local, across):
        print("no passing rate")
        return 1
    print(f"{'':36} {'per s':>8} {'CPU s/1k':>9} {'retrieve p50':>13} {'p99':>9}")
    print(f"{'plain calls at site A (anchor)':36} {plain['cps']:8.0f} {plain['cpu']:9.3f}")
    for name, r in (("park at A, retrieve at A", local), ("park at A, retrieve at B (trunk)", across)):
        print(f"{name:36} {r['cps']:8.0f} {r['cpu']:9.3f} {r['p50']:10.2f} ms {r['p99']:6.2f} ms")
    print(f"across sites / same site: {across['cps'] / local['cps']:.2f}x rate; "
          f"across sites / plain calls: {across['cps'] / plain['cps']:.2f}x rate")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
