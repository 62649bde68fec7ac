#!/usr/bin/env python3
"""rolling_restart.py - the longest write gap while every node of a running cluster is restarted in turn.

One closed-loop writer sends PUTs to one node after another (it moves on to the next node when a request fails or
times out, so it always writes through a node that is up); meanwhile each node is stopped with SIGTERM (a graceful
stop: a leader hands leadership over first), restarted with its own command line and data, and waited for until it
answers again; then the next one. Followers first, the leader last, so that the leader's stop is measured too.

The result is the longest stretch with no write acknowledged, over the whole run and around each restart.

  rolling_restart.py --endpoints 127.0.0.1:31751,... --pids 11,12,13 [--rounds 1] [--settle 2]
Last line: one JSON object. Standard library only; every loop is bounded in time.
"""
import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time


def req(ep, method, path, body=None, timeout=0.5):
    host, port = ep.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def status(ep):
    try:
        st, b = req(ep, "GET", "/v1/status")
        return json.loads(b) if st == 200 else None
    except Exception:
        return None


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", required=True, help="client endpoints, in the order of --pids")
    ap.add_argument("--pids", required=True)
    ap.add_argument("--rounds", type=int, default=1, help="how many times every node is restarted")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of writes between restarts")
    ap.add_argument("--log-dir", default="/tmp")
    a = ap.parse_args()
    eps = a.endpoints.split(",")
    pids = [int(p) for p in a.pids.split(",")]
    acks = []
    stop = threading.Event()

    def writer():
        n, k = 0, 0
        end = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < end:
            n += 1
            t0 = time.monotonic()
            try:
                st, _ = req(eps[k], "PUT", f"/v1/kv/rolling-{n % 64}", body=f"v{n}".encode())
                if st == 200:
                    acks.append(time.monotonic())
                    continue
            except Exception:
                pass
            k = (k + 1) % len(eps)
            if time.monotonic() - t0 < 0.005:
                time.sleep(0.005)

    th = threading.Thread(target=writer)
    th.start()
    time.sleep(a.settle)
    restarts = []
    t_begin = time.monotonic()
    for rnd in range(a.rounds):
        leader = None
        for ep in eps:
            s = status(ep)
            if s and s.get("role") == "leader":
                leader = ep
        order = [ep for ep in eps if ep != leader] + ([leader] if leader else [])
        for ep in order:
            i = eps.index(ep)
            pid = pids[i]
            argv, wd = cmdline(pid), os.readlink(f"/proc/{pid}/cwd")
            t_stop = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            end = time.monotonic() + 30
            while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.02)
            t_exit = time.monotonic()
            log = open(os.path.join(a.log_dir, f"rolling-{i}.log"), "ab")
            p = subprocess.Popen(argv, cwd=wd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            pids[i] = p.pid
            end = time.monotonic() + 30
            while time.monotonic() < end:
                s = status(ep)
                if s and s.get("leader"):
                    break
                time.sleep(0.05)
            time.sleep(a.settle)
            window = [t_stop] + sorted(x for x in list(acks) if t_stop < x <= time.monotonic()) + [time.monotonic()]
            gap = max(b - a_ for a_, b in zip(window, window[1:])) * 1000
            restarts.append({"round": rnd, "node": ep, "was_leader": ep == leader, "gap_ms": round(gap, 1),
                             "stop_to_exit_ms": round((t_exit - t_stop) * 1000, 1)})
            print(f"restart {ep} ({'leader' if ep == leader else 'follower'}): longest write gap {gap:.0f} ms",
                  file=sys.stderr)
    t_end = time.monotonic()
    stop.set()
    th.join()
    window = [t_begin] + sorted(x for x in acks if t_begin < x <= t_end) + [t_end]
    longest = max(b - a_ for a_, b in zip(window, window[1:])) * 1000
    out = {"restarts": len(restarts), "writes_acknowledged": len([x for x in acks if t_begin < x <= t_end]),
           "longest_gap_ms": round(longest, 1),
           "gap_ms_median": round(statistics.median(r["gap_ms"] for r in restarts), 1),
           "pids": pids, "each": restarts}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
