#!/usr/bin/env python3
"""The scale-out figures (bench/citus.sh starts everything and passes the processes): for
KV get, KV set and balance over 256 wallets, wrk against

  1. one Postgres (the proxy's defaults),
  2. the Citus cluster through a proxy on the coordinator (the proxy's defaults: group commit),
  3. the same with ECHOVALUE_BATCH_MAX=1 (every call its own transaction, always delegated),
  4. the cluster through two proxies, one on each worker (ECHOVALUE_BATCH_MAX=1), at once,

and per row the requests per second, the median latency, and the CPU per request of every
Postgres (microseconds: the coordinator, each worker) and of the proxies. The last column is
the cluster's database CPU per request over the single node's: the work a request costs
once it is spread, which on this 2-core machine (every node on the same cores) is the figure
that tells what separate machines would do."""

import argparse
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import HERE, OPERATIONS, postgres_cpu, proc_cpu, run, wrk_ms  # noqa: E402


def wrk_once(url, op, tokens, clients, seconds, out):
    """One wrk run; its output goes to out[url]."""
    out[url] = run([
        "wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds}s", "--latency",
        "-s", os.path.join(HERE, "wrk", "api.lua"), url, "--", op, tokens,
    ])


def measure(urls, op, tokens, clients, seconds, postmasters, proxies):
    """wrk against every URL at once (clients split between them): requests per second,
    median latency (ms, the worst of the runs), and CPU µs per request of each Postgres and of
    all the proxies together."""
    def cpu():
        time.sleep(0.3)
        return [postgres_cpu(p) for p in postmasters] + [sum(proc_cpu(p) for p in proxies)]

    before = cpu()
    out = {}
    threads = [threading.Thread(target=wrk_once,
                                args=(u, op, tokens, max(1, clients // len(urls)), seconds, out))
               for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = cpu()
    rps = requests = 0
    p50 = 0.0
    for u in urls:
        text = out.get(u)
        if text is None:
            sys.exit(f"bench: wrk against {u} failed")
        if "Non-2xx" in text or "Socket errors" in text:
            sys.exit(f"bench: wrk saw errors against {u} for {op}:\n{text}")
        rps += float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        requests += int(re.search(r"^\s+(\d+) requests in", text, re.M).group(1))
        p50 = max(p50, wrk_ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)))
    per_request = [(b - a) / requests * 1e6 for a, b in zip(before, after)]
    return rps, p50, per_request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--single", nargs=4, metavar=("POSTMASTER", "PROXY", "PORT", "TOKENS"))
    ap.add_argument("--nodes", nargs=3, type=int, metavar=("COORDINATOR", "WORKER1", "WORKER2"))
    ap.add_argument("--tokens")
    ap.add_argument("--coordinator", nargs=2, type=int, metavar=("PROXY", "PORT"))
    ap.add_argument("--coordinator-unbatched", nargs=2, type=int, metavar=("PROXY", "PORT"))
    ap.add_argument("--workers", nargs=4, type=int, metavar=("PROXY1", "PORT1", "PROXY2", "PORT2"))
    a = ap.parse_args()
    url = "http://127.0.0.1:{}".format
    single_pm, single_proxy, single_port, single_tokens = a.single
    rows = [
        ("1 node", [url(single_port)], single_tokens, [int(single_pm)], [int(single_proxy)]),
        ("cluster via coordinator", [url(a.coordinator[1])], a.tokens, a.nodes, [a.coordinator[0]]),
        ("cluster via coordinator, BATCH_MAX=1", [url(a.coordinator_unbatched[1])], a.tokens,
         a.nodes, [a.coordinator_unbatched[0]]),
        ("cluster via both workers, BATCH_MAX=1", [url(a.workers[1]), url(a.workers[3])], a.tokens,
         a.nodes, [a.workers[0], a.workers[2]]),
    ]
    print(f"Scale-out: wrk, {a.clients} connections, {a.seconds} s per cell, 256 wallets; "
          "CPU in µs per request")
    print()
    print("| path | operation | req/s | p50 ms | coordinator | worker 1 | worker 2 | "
          "databases | proxies | databases ÷ 1 node |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    single_db = {}
    for op in OPERATIONS:
        for name, urls, tokens, postmasters, proxies in rows:
            rps, p50, cpu = measure(urls, op, tokens, a.clients, a.seconds, postmasters, proxies)
            db = sum(cpu[:-1])
            if len(postmasters) == 1:
                single_db[op] = db
                nodes = f"{cpu[0]:.0f} | | "
            else:
                nodes = " | ".join(f"{c:.0f}" for c in cpu[:-1])
            ratio = db / single_db[op] if single_db.get(op) else float("nan")
            print(f"| {name} | {op} | {rps:.0f} | {p50:.2f} | {nodes} | {db:.0f} | {cpu[-1]:.0f} | "
                  f"{ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
