#!/usr/bin/env python3
"""The scale-out figures (bench/citus.sh starts everything and passes the processes): for
KV get, KV set and balance over 256 wallets, wrk against

  1. one Postgres (the proxy's defaults: group commit under load),
  2. one Postgres with ECHOVALUE_BATCH_MAX=1 (every call its own transaction),
  3. the Citus cluster through a proxy on the coordinator (the proxy's defaults; the extension
     turns group commit off on a distributed install, so every call is delegated),
  4. the cluster through two proxies, one on each worker, at once,

and per row the requests per second, the median latency, and the CPU per request of every
Postgres (microseconds: the coordinator, each worker) and of the proxies. The last column is
the cluster's database CPU per request over the single node's with ECHOVALUE_BATCH_MAX=1
(the same transactions): the work a request costs once it is spread, which on this 2-core
machine (every node on the same cores) is the figure that tells what separate machines would
do. Before measuring, each proxy's echovalue_proxy_group_commit gauge is checked: 1 on the
single node's default proxy, 0 on every other."""

import argparse
import os
import re
import sys
import threading
import time
import urllib.request

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


def group_commit(url, want):
    """The proxy's echovalue_proxy_group_commit gauge, once it is `want` or after 15 s (the
    proxy asks the database at start)."""
    value = None
    for _ in range(30):
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            m = re.search(r"^echovalue_proxy_group_commit (\S+)$", r.read().decode(), re.M)
        value = float(m.group(1)) if m else None
        if value == want:
            break
        time.sleep(0.5)
    return value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--single", nargs=4, metavar=("POSTMASTER", "PROXY", "PORT", "TOKENS"))
    ap.add_argument("--nodes", nargs=3, type=int, metavar=("COORDINATOR", "WORKER1", "WORKER2"))
    ap.add_argument("--tokens")
    ap.add_argument("--coordinator", nargs=2, type=int, metavar=("PROXY", "PORT"))
    ap.add_argument("--single-unbatched", nargs=2, type=int, metavar=("PROXY", "PORT"))
    ap.add_argument("--workers", nargs=4, type=int, metavar=("PROXY1", "PORT1", "PROXY2", "PORT2"))
    a = ap.parse_args()
    url = "http://127.0.0.1:{}".format
    single_pm, single_proxy, single_port, single_tokens = a.single
    rows = [
        ("1 node", [url(single_port)], single_tokens, [int(single_pm)], [int(single_proxy)]),
        ("1 node, BATCH_MAX=1", [url(a.single_unbatched[1])], single_tokens, [int(single_pm)],
         [a.single_unbatched[0]]),
        ("cluster via coordinator", [url(a.coordinator[1])], a.tokens, a.nodes, [a.coordinator[0]]),
        ("cluster via both workers", [url(a.workers[1]), url(a.workers[3])], a.tokens,
         a.nodes, [a.workers[0], a.workers[2]]),
    ]
    for name, urls, *_ in rows:
        want = 1.0 if name == "1 node" else 0.0
        for u in urls:
            got = group_commit(u, want)
            if got != want:
                sys.exit(f"bench: {u} ({name}) has echovalue_proxy_group_commit {got}, not {want}")
    print(f"Scale-out: wrk, {a.clients} connections, {a.seconds} s per cell, 256 wallets; "
          "CPU in µs per request")
    print()
    print("| path | operation | req/s | p50 ms | coordinator | worker 1 | worker 2 | "
          "databases | proxies | databases ÷ 1 node, BATCH_MAX=1 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    single_db = {}
    for op in OPERATIONS:
        for name, urls, tokens, postmasters, proxies in rows:
            rps, p50, cpu = measure(urls, op, tokens, a.clients, a.seconds, postmasters, proxies)
            db = sum(cpu[:-1])
            if len(postmasters) == 1:
                single_db[op] = db   # the unbatched row, second, is the one compared
                nodes = f"{cpu[0]:.0f} | | "
            else:
                nodes = " | ".join(f"{c:.0f}" for c in cpu[:-1])
            ratio = f"{db / single_db[op]:.2f}" if len(postmasters) > 1 else ""
            print(f"| {name} | {op} | {rps:.0f} | {p50:.2f} | {nodes} | {db:.0f} | {cpu[-1]:.0f} | "
                  f"{ratio} |", flush=True)


if __name__ == "__main__":
    main()
