#!/usr/bin/env python3
"""../shared/bench/kvbench.py with three more options. Everything else is kvbench's, unchanged.

    python3 Benchmarks/kvbench_query.py [--kvbench PATH/TO/kvbench.py] [--http-query Q] [--pace-ms MS]
        [--fast-values] KVBENCH_ARGS...

--http-query Q: GETs of the http target go to {prefix}/{key}?Q (e.g. consistency=serializable).
--pace-ms MS: each client sends at most one request every MS milliseconds (a paced load, e.g. readers at a fixed
  rate beside writers, rather than a closed loop that takes all the CPU it can). The wait before a request counts in
  its latency, so a paced run's latencies are not the server's: use its ops/s only.

--fast-values: each client's 32 values are made from random bytes mapped onto kvbench's alphabet in one call,
  instead of one Python call per byte (which takes kvbench seconds per client for a 64 KiB value and minutes for
  1 MiB, so that large-value runs measure nothing). The values are the same sizes and alphabet, not the same bytes.

--kvbench defaults to ../shared/bench/kvbench.py next to this checkout (or $KVBENCH).
"""
import importlib.util
import asyncio
import copy
import os
import random
import sys
import time


def main():
    argv = sys.argv[1:]
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.get("KVBENCH", os.path.join(here, "..", "..", "shared", "bench", "kvbench.py"))
    query = ""
    pace = 0.0
    fast_values = False
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--fast-values":
            fast_values = True
            i += 1
            continue
        if argv[i] in ("--kvbench", "--http-query", "--pace-ms"):
            if i + 1 >= len(argv):
                sys.exit("%s needs a value" % argv[i])
            if argv[i] == "--kvbench":
                path = argv[i + 1]
            elif argv[i] == "--pace-ms":
                pace = float(argv[i + 1]) / 1000.0
            else:
                query = argv[i + 1].lstrip("?")
            i += 2
            continue
        rest.append(argv[i])
        i += 1
    if not os.path.isfile(path):
        sys.exit("kvbench.py not found at %s (use --kvbench PATH)" % path)
    spec = importlib.util.spec_from_file_location("kvbench", path)
    kvbench = importlib.util.module_from_spec(spec)
    sys.modules["kvbench"] = kvbench
    spec.loader.exec_module(kvbench)

    if query:
        base = kvbench.TARGETS["http"]

        class QueryTarget(base):
            def request(self, op, key, value):
                method, p, body, ctype = super().request(op, key, value)
                if op == "get":
                    p = p + "?" + query
                return method, p, body, ctype

        kvbench.TARGETS["http"] = QueryTarget
    if pace > 0:
        send = kvbench.RawConn.request

        async def paced(self, data):
            now = time.monotonic()
            due = getattr(self, "_due", now)
            if due > now:
                await asyncio.sleep(due - now)
            self._due = max(due, now) + pace
            return await send(self, data)

        kvbench.RawConn.request = paced
    if fast_values:
        made = kvbench.Workload.__init__
        alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        table = bytes(alphabet[b % len(alphabet)] for b in range(256))

        def workload(self, args, seed):
            small = copy.copy(args)
            small.value_size = 0
            made(self, small, seed)
            rng = random.Random(seed)
            self.values = [rng.randbytes(args.value_size).translate(table) for _ in range(32)]

        kvbench.Workload.__init__ = workload
    return kvbench.main(rest)


if __name__ == "__main__":
    sys.exit(main())
