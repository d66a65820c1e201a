#!/usr/bin/env python3
"""Runs the measurements of bench/run.sh against a running proxy and cluster, and prints the table.

Rows, each at client concurrency 1, 16 and 64:
  1. the proxy over HTTP (wrk): KV get, KV set, balance, spread over 256 wallets;
  2. pgbench calling the same SQL functions with as many connections as clients;
  3. pgbench -N, the built-in small write transaction, as the yardstick of this machine;
  4. KV get through the proxy with one hot token for every client (and with batching off);
  5. what a user might pick instead: Redis behind webdis (bench/webdis.sh), GET and a durable
     SET (appendfsync always), when they are installed.
Plus the proxy's resident memory under 256 connections, and the CPU time per request of
Postgres, the proxy and the load generator in each cell (Redis, webdis and wrk in row 5).
Ratios: 1/2 per operation (the proxy's overhead), 2/3 for a charged KV get (what one API call
costs against a small write transaction), hot/many (the hot-wallet case), 1/5 for KV get and
set (echovalue against Redis behind webdis; no target, for scale).

With --webdis-only (bash bench/webdis.sh) only row 5 is measured and printed.
"""

import argparse
import datetime
import http.client
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
CONCURRENCY = (1, 16, 64)
OPERATIONS = ("kv_get", "kv_set", "balance")
MEMORY_CONNECTIONS = 256


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name: [0] is the state, [1] the parent."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def proc_cpu(pid, reaped_children=False):
    """CPU seconds (user + system) of a process and all its threads, and, if asked, of its
    children that have exited and been waited for."""
    try:
        fields = proc_stat(pid)
    except OSError:  # exited meanwhile: its time is in its parent's children total
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + (cutime + cstime if reaped_children else 0)) / TICK


def postgres_cpu(postmaster):
    """CPU seconds used so far by a Postgres cluster: the postmaster, its live children
    (backends, WAL writer, checkpointer...) and the children that have exited."""
    total = proc_cpu(postmaster, reaped_children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(proc_stat(entry)[1]) == postmaster:
                    total += proc_cpu(entry)
            except OSError:
                pass
    return total


class CpuMeter:
    """CPU time per request of one measurement: Postgres, the proxy, and the load generator
    (wrk or pgbench's client: the children this script waited for). With servers (a function
    giving two CPU totals in seconds), those two instead of Postgres and the proxy."""

    def __init__(self, args, servers=None):
        self.servers = servers or (lambda: (postgres_cpu(args.pg_pid), proc_cpu(args.proxy_pid)))

    def __enter__(self):
        self.start = self.snapshot()
        return self

    def snapshot(self):
        # backends of a finished pgbench need a moment to exit and be reaped
        time.sleep(0.3)
        children = os.times()
        return (*self.servers(), children.children_user + children.children_system)

    def __exit__(self, *exc):
        end = self.snapshot()
        self.used = [b - a for a, b in zip(self.start, end)]

    def per_request_us(self, requests):
        """(Postgres, proxy, load generator) microseconds of CPU per request."""
        return tuple(u / requests * 1e6 for u in self.used)


def wrk_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(args, op, tokens_file, clients, seconds, url=None):
    """Requests per second, latency p50/p99 (ms), CPU µs per request (Postgres, proxy, wrk)
    and the number of requests of one wrk run; every answer must be 200."""
    return wrk_run(CpuMeter(args), "api.lua", url or args.url, [op, tokens_file], clients, seconds)


def wrk_run(meter, script, url, script_args, clients, seconds):
    """wrk with bench/wrk/SCRIPT, measured by meter: the figures described in wrk()."""
    with meter as cpu:
        out = run([
            "wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds}s", "--latency",
            "-s", os.path.join(HERE, "wrk", script), url, "--", *script_args,
        ])
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"bench: wrk saw errors for {script} {script_args[0]} at {clients}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = wrk_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = wrk_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"^\s+(\d+) requests in", out, re.M).group(1))
    return rps, p50, p99, cpu.per_request_us(requests), requests


def pgbench(args, script_args, clients, seconds, db, user):
    """Transactions per second, latency p50/p99 (ms) from pgbench's per-transaction log, and
    CPU µs per transaction (Postgres, -, pgbench's client)."""
    workdir = os.path.join(args.work, f"pgbench-{time.monotonic_ns()}")
    os.makedirs(workdir)
    with CpuMeter(args) as cpu:
        out = run([
            args.pgbench, "-h", args.pg_host, "-p", str(args.pg_port), "-U", user, "-n",
            "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
            "-l", "--log-prefix", os.path.join(workdir, "tx"), *script_args, db,
        ])
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if failed and int(failed.group(1)) > 0:
        sys.exit(f"bench: pgbench had failed transactions:\n{out}")
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latencies = []
    for name in os.listdir(workdir):
        with open(os.path.join(workdir, name)) as f:
            # client_id transaction_no time(us) script_no time_epoch time_us
            latencies.extend(int(line.split()[2]) for line in f if line.strip())
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] / 1000.0

    return tps, pct(0.50), pct(0.99), cpu.per_request_us(len(latencies))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_under_load(args, seconds):
    """Largest resident set of the proxy while wrk holds 256 connections on KV get."""
    peak = [rss_kib(args.proxy_pid)]
    idle = peak[0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(args.proxy_pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = wrk(args, "kv_get", args.tokens_many, MEMORY_CONNECTIONS, seconds)
    finally:
        done.set()
        sampler.join()
    return idle, peak[0], result


def fmt_row(label, cells):
    return "| " + label + " | " + " | ".join(cells) + " |"


def measure_cells(m):
    rps, p50, p99 = m[:3]
    return [f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}"]


# Row 5, Redis behind webdis (bench/webdis.sh): the operation of bench/wrk/webdis.lua, the
# row's label, and the echovalue operation it stands beside in the ratios.
WEBDIS_OPS = (("get", "5. webdis GET", "kv_get"), ("set", "5. webdis durable SET", "kv_set"))


def webdis_check(url):
    """Stores bench_k = "v" through webdis and reads it back in the forms of webdis.lua (wrk
    checks only the status): row 5 measures real answers. One kept-alive connection, as wrk's:
    webdis 0.1.9 may never answer a PUT sent with "Connection: close" (urllib's way) whose body
    arrives apart from its headers."""
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=10)
    for method, path, body, want in (("PUT", "/SET/bench_k.txt", b"v", "+OK"),
                                     ("GET", "/GET/bench_k.txt", None, "v")):
        conn.request(method, path, body)
        got = conn.getresponse().read().decode()
        if got != want:
            sys.exit(f"bench: webdis answered {got!r} to {method} {path}, not {want!r}")
    conn.close()


def webdis_wrk(args, op, clients, seconds, aof=None):
    """One wrk run of bench/wrk/webdis.lua, the figures of wrk() with CPU µs per request of
    Redis, webdis and wrk. With aof (a list [bytes, requests]), adds to it how much Redis's
    append-only files grew and the requests made: bytes per SET show each SET reaches them."""
    def aof_size():
        return sum(os.path.getsize(os.path.join(args.redis_aof, n)) for n in os.listdir(args.redis_aof))

    before = aof_size()
    meter = CpuMeter(args, lambda: (proc_cpu(args.redis_pid), proc_cpu(args.webdis_pid)))
    result = wrk_run(meter, "webdis.lua", args.webdis_url, [op], clients, seconds)
    if aof is not None:
        aof[0] += aof_size() - before
        aof[1] += result[4]
    return result


def webdis_rows(webdis, proxy=None, cpu=False):
    """Row 5 of the results table; with cpu, of the CPU table (Redis + webdis + wrk); with
    proxy, the ratios echovalue KV get and set over HTTP (row 1) ÷ row 5. None if not measured."""
    rows = []
    for op, label, ev in WEBDIS_OPS if webdis else ():
        if proxy:
            rows.append(fmt_row(f"1÷5 echovalue {ev} vs webdis {label[10:]} (no target)",
                                [f"{proxy[ev, c][0] / webdis[op, c][0]:.2f}" for c in CONCURRENCY]))
        elif cpu:
            rows.append(fmt_row(label, ["{:.0f} + {:.0f} + {:.0f}".format(*webdis[op, c][3])
                                        for c in CONCURRENCY]))
        else:
            rows.append(fmt_row(label, [x for c in CONCURRENCY for x in measure_cells(webdis[op, c])]))
    return rows


def webdis_note(webdis, aof):
    if not webdis:
        return ("Row 5 (Redis behind webdis) not measured: redis-server or webdis is missing "
                "(apt-get install redis-server webdis), or BENCH_WEBDIS=0.")
    redis = re.search(r"v=(\S+)", run(["redis-server", "--version"]))
    webdis_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "webdis"],
                                    capture_output=True, text=True).stdout.strip()
    return (f"Row 5: Redis {redis.group(1) if redis else '?'} behind webdis {webdis_version or '?'}, "
            "both on loopback as bench/webdis.sh sets them up; GET /GET/bench_k.txt and PUT "
            "/SET/bench_k.txt with body \"v\" (bench/wrk/webdis.lua). Redis runs with appendonly yes "
            "and appendfsync always (each SET written and fsynced before its answer): its AOF grew "
            f"by {aof[0] / max(aof[1], 1):.1f} bytes per SET over the SET cells ({aof[1]:,} SETs).")


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    pg = ""
    if args_global.pgbench:
        pg = ", " + run([args_global.pgbench, "--version"]).strip().replace("pgbench ", "")
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, {platform.system()} {platform.release()}{pg}"


def main():
    global args_global
    # bash bench/webdis.sh: row 5 alone, with no proxy or cluster to point at
    full = "--webdis-only" not in sys.argv[1:]
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=full)
    p.add_argument("--url-nobatch", required=full, help="the proxy with batching off")
    p.add_argument("--proxy-pid", type=int, required=full)
    p.add_argument("--pg-pid", type=int, required=full, help="the postmaster's")
    p.add_argument("--pg-host", required=full)
    p.add_argument("--pg-port", type=int, required=full)
    p.add_argument("--pgbench", required=full)
    p.add_argument("--tokens-many", required=full)
    p.add_argument("--tokens-hot", required=full)
    p.add_argument("--webdis-only", action="store_true", help="measure and print row 5 alone")
    p.add_argument("--webdis-url", required=not full, help="row 5; without it, not measured")
    p.add_argument("--redis-pid", type=int)
    p.add_argument("--webdis-pid", type=int)
    p.add_argument("--redis-aof", help="Redis's appendonlydir")
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--work", required=True)
    p.add_argument("--out")
    args = p.parse_args()
    args_global = args
    if args.webdis_url and not (args.redis_pid and args.webdis_pid and args.redis_aof):
        p.error("--webdis-url needs --redis-pid, --webdis-pid and --redis-aof")

    def say(msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    if full:
        with open(args.tokens_many) as f:
            ntokens = sum(1 for line in f if line.strip())
        say("warming up")
        wrk(args, "kv_get", args.tokens_many, 16, 2)
    webdis, aof = {}, [0, 0]
    if args.webdis_url:
        say("warming up webdis")
        webdis_check(args.webdis_url)
        webdis_wrk(args, "get", 16, 2)
    proxy, direct, yardstick, hot, hot_nobatch = {}, {}, {}, {}, {}
    for c in CONCURRENCY:
        if full:
            for op in OPERATIONS:
                say(f"proxy {op} c={c}")
                proxy[op, c] = wrk(args, op, args.tokens_many, c, args.seconds)
                say(f"pgbench {op} c={c}")
                script = ["-f", os.path.join(HERE, "pgbench", f"{op}.sql"), "-D", f"ntokens={ntokens}",
                          "-D", "have_token=0"]
                direct[op, c] = pgbench(args, script, c, args.seconds, "echovalue", "echovalue_proxy")
            say(f"pgbench -N c={c}")
            yardstick[c] = pgbench(args, ["-N"], c, args.seconds, "pgb", "postgres")
            say(f"proxy kv_get, one hot token, c={c}")
            hot[c] = wrk(args, "kv_get", args.tokens_hot, c, args.seconds)
            say(f"proxy kv_get, one hot token, batching off, c={c}")
            hot_nobatch[c] = wrk(args, "kv_get", args.tokens_hot, c, args.seconds, args.url_nobatch)
        if args.webdis_url:
            for op, label, _ in WEBDIS_OPS:
                say(f"{label[3:]} c={c}")
                webdis[op, c] = webdis_wrk(args, op, c, args.seconds, aof if op == "set" else None)
    if full:
        say(f"proxy memory at {MEMORY_CONNECTIONS} connections")
        idle_kib, peak_kib, mem_run = memory_under_load(args, args.seconds)

    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{machine()}; {args.seconds} s per cell, clients and server on the same machine; "
        f"load average before the run {load_before:.2f}, after {os.getloadavg()[0]:.2f}.",
        "",
        "| row | " + " | ".join(f"c={c} req/s | p50 ms | p99 ms" for c in CONCURRENCY) + " |",
        "|---|" + "---:|" * (3 * len(CONCURRENCY)),
    ]
    if full:
        for op in OPERATIONS:
            lines.append(fmt_row(f"1. proxy {op}", [x for c in CONCURRENCY for x in measure_cells(proxy[op, c])]))
            lines.append(fmt_row(f"2. pgbench {op}", [x for c in CONCURRENCY for x in measure_cells(direct[op, c])]))
        lines.append(fmt_row("3. pgbench -N", [x for c in CONCURRENCY for x in measure_cells(yardstick[c])]))
        lines.append(fmt_row("4. proxy kv_get, one hot token", [x for c in CONCURRENCY for x in measure_cells(hot[c])]))
        lines.append(fmt_row("(4 with batching off: ECHOVALUE_BATCH_MAX=1)",
                             [x for c in CONCURRENCY for x in measure_cells(hot_nobatch[c])]))
    lines += webdis_rows(webdis)
    if full:
        lines += [
            "",
            "| ratio (target) | " + " | ".join(f"c={c}" for c in CONCURRENCY) + " |",
            "|---|" + "---:|" * len(CONCURRENCY),
        ]
        for op in OPERATIONS:
            lines.append(fmt_row(f"1÷2 {op} (≥ 0.9)",
                                 [f"{proxy[op, c][0] / direct[op, c][0]:.2f}" for c in CONCURRENCY]))
        lines.append(fmt_row("2÷3 kv_get vs pgbench -N (≥ 1.0)",
                             [f"{direct['kv_get', c][0] / yardstick[c][0]:.2f}" for c in CONCURRENCY]))
        lines.append(fmt_row("hot ÷ many tokens, proxy kv_get (≥ 0.5)",
                             [f"{hot[c][0] / proxy['kv_get', c][0]:.2f}" for c in CONCURRENCY]))
        lines.append(fmt_row("(hot ÷ many with batching off)",
                             [f"{hot_nobatch[c][0] / proxy['kv_get', c][0]:.2f}" for c in CONCURRENCY]))
        lines += webdis_rows(webdis, proxy=proxy)
    lines += [
        "",
        "CPU time per request in µs, Postgres + proxy + load generator (wrk, or pgbench's own "
        "client), from /proc: where each row's time goes on the shared cores (row 5: Redis + "
        "webdis + wrk).",
        "",
        "| row | " + " | ".join(f"c={c}" for c in CONCURRENCY) + " |",
        "|---|" + "---:|" * len(CONCURRENCY),
    ]

    def cpu_cells(results, proxied):
        cells = []
        for c in CONCURRENCY:
            pg, px, client = results[c][3]
            cells.append(f"{pg:.0f} + {px:.0f} + {client:.0f}" if proxied
                         else f"{pg:.0f} + – + {client:.0f}")
        return cells

    if full:
        for op in OPERATIONS:
            lines.append(fmt_row(f"1. proxy {op}", cpu_cells({c: proxy[op, c] for c in CONCURRENCY}, True)))
            lines.append(fmt_row(f"2. pgbench {op}", cpu_cells({c: direct[op, c] for c in CONCURRENCY}, False)))
        lines.append(fmt_row("3. pgbench -N", cpu_cells(yardstick, False)))
        lines.append(fmt_row("4. proxy kv_get, one hot token", cpu_cells(hot, True)))
    lines += webdis_rows(webdis, cpu=True)
    lines.append("")
    if full:
        lines += [
            f"Proxy resident memory: {idle_kib / 1024:.1f} MiB before, peak {peak_kib / 1024:.1f} MiB "
            f"during {MEMORY_CONNECTIONS} connections of KV get ({mem_run[0]:,.0f} req/s, "
            f"p99 {mem_run[2]:.2f} ms); target < 64 MiB.",
            "",
        ]
    lines.append(webdis_note(webdis, aof))
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
