#!/usr/bin/env python3
"""Scheduled webhooks at scale: planning cost and the time from a due minute to delivery.

Against a fresh database (ADMIN_URL, a superuser libpq URL for psql) with
echovalue.webhook_allow_insecure on. Builds W wallets with S schedules each (one `* * * * *`,
the others `0 3 * * *`), all pointing at a receiver on this process, then prints:
  1. what a scheduler pass costs when nothing is due (schedule_next_due + an empty
     schedule_claim), at 1,000 schedules and at W*S: it must not grow with the schedules;
  2. the database time to plan one run (schedule_claim over W due runs, timed in SQL);
  3. with the release mailhook (MAILHOOK_BIN on MAILHOOK_URL) running: W runs due in the
     same minute, the time from that minute to the first and the last webhook received.
Not a test: figures only. Settings (env): W (default 10000), S (default 10), CONCURRENCY
(delivery slots, default 64).
"""
import http.server
import json
import os
import subprocess
import sys
import threading
import time

ADMIN_URL = os.environ["ADMIN_URL"]
W = int(os.environ.get("W", "10000"))
S = int(os.environ.get("S", "10"))
CONCURRENCY = os.environ.get("CONCURRENCY", "64")

arrivals = []  # (wall-clock time, body) of each POST
lock = threading.Lock()
all_in = threading.Event()


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        now = time.time()
        with lock:
            arrivals.append((now, body))
            if len(arrivals) >= W:
                all_in.set()
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def psql(sql, *flags):
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", *flags, ADMIN_URL],
                         input=sql, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr}")
    return out.stdout.strip()


def make_schedules(first_wallet, wallets, url):
    """wallets new wallets from number first_wallet, each with S scheduled webhooks."""
    psql(f"""
insert into echovalue.wallets (id, balance, hash)
select echovalue._wallet_id_new(), 1000000000, md5('bench-' || g) from generate_series({first_wallet}, {first_wallet + wallets - 1}) g;
insert into echovalue.mailboxes (wallet_id, mailbox, secret)
select w.id, md5('mb-' || w.hash), 'whsec_' || encode(sha256(w.hash::bytea), 'base64')
  from echovalue.wallets w where not exists (select 1 from echovalue.mailboxes m where m.wallet_id = w.id);
insert into echovalue.webhooks (wallet_id, name, url, mailbox, cron, timezone, next_run_at)
select w.id, 's' || s, '{url}', md5(w.hash || s),
       case when s = 0 then '* * * * *' else '0 3 * * *' end, 'Europe/Rome',
       now() + interval '1 day'
  from echovalue.wallets w, generate_series(0, {S - 1}) s
 where not exists (select 1 from echovalue.webhooks h where h.wallet_id = w.id);
vacuum analyze echovalue.wallets;
vacuum analyze echovalue.webhooks;
""")


def idle_pass_micros():
    """Mean microseconds of one scheduler pass with nothing due, over 2,000 passes."""
    return float(psql_notice("""
do $$
declare t0 timestamptz := clock_timestamp();
begin
    for i in 1..2000 loop
        perform echovalue.schedule_next_due();
        perform echovalue.schedule_claim();
    end loop;
    raise notice 'micros=%', extract(epoch from clock_timestamp() - t0) * 1e6 / 2000;
end $$;
""", "micros="))


def psql_notice(sql, key):
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", ADMIN_URL],
                         input=sql, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr}")
    for line in out.stderr.splitlines():
        if key in line:
            return line.split(key, 1)[1].strip()
    sys.exit(f"no {key} in: {out.stderr}")


def main():
    # a backlog for every delivery slot: the default of 5 refuses connections, and refused
    # deliveries come back only after their retry delay
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/run"

    make_schedules(1, 1000 // S, url)
    idle_small = idle_pass_micros()
    t0 = time.time()
    make_schedules(1000 // S + 1, W - 1000 // S, url)
    made = int(psql("select count(*) from echovalue.webhooks where next_run_at is not null"))
    print(f"made {made} active schedules over {W} wallets in {time.time() - t0:.1f} s")
    idle_big = idle_pass_micros()
    print(f"1. nothing due: {idle_small:.0f} us per scheduler pass at 1,000 schedules, "
          f"{idle_big:.0f} us at {made:,}")

    # 2. planning, timed in SQL: every wallet's `* * * * *` due, then planned in batches of 500
    psql("update echovalue.webhooks set next_run_at = now() - interval '1 second' where name = 's0'")
    plan_ms = float(psql_notice("""
do $$
declare t0 timestamptz := clock_timestamp(); n int; total int := 0;
begin
    loop
        n := echovalue.schedule_claim(batch => 500);
        total := total + n;
        exit when n = 0;
    end loop;
    raise notice 'ms=% runs=%', extract(epoch from clock_timestamp() - t0) * 1000, total;
end $$;
""", "ms=").split()[0])
    print(f"2. planning {W} due runs: {plan_ms:.0f} ms in the database, {plan_ms * 1000 / W:.0f} us per run "
          "(charge, log, queue, next run)")
    psql("update echovalue.deliveries set state = 'failed' where state = 'pending'")

    # 3. end to end: W runs due at the next minute (at least 15 s away), the mailhook running
    due = float(psql("select extract(epoch from date_trunc('minute', now() + interval '75 seconds'))"))
    psql(f"update echovalue.webhooks set next_run_at = to_timestamp({due}) where name = 's0'")
    env = dict(os.environ, ECHOVALUE_DATABASE_URL=os.environ["MAILHOOK_URL"],
               ECHOVALUE_SMTP_LISTEN="127.0.0.1:0", ECHOVALUE_LOG="warn",
               ECHOVALUE_DELIVERY_CONCURRENCY=CONCURRENCY, ECHOVALUE_DELIVERY_BATCH="200")
    with open(os.environ["MAILHOOK_LOG"], "w") as log:
        hook = subprocess.Popen([os.environ["MAILHOOK_BIN"]], env=env, stdout=log, stderr=log)
    try:
        print(f"   {W} runs due at {time.strftime('%H:%M:%S', time.gmtime(due))} UTC; waiting")
        if not all_in.wait(timeout=due - time.time() + 300):
            sys.exit(f"only {len(arrivals)} of {W} runs arrived")
    finally:
        hook.terminate()
        hook.wait()
    with lock:
        times = sorted(t for t, _ in arrivals)
        ids = {(json.loads(b)["webhookId"], json.loads(b)["scheduledFor"], json.loads(b)["walletHash"])
               for _, b in arrivals}
    print(f"3. due minute to first webhook received: {times[0] - due:.2f} s, "
          f"to the last of {W}: {times[W - 1] - due:.2f} s ({len(ids)} distinct runs, {len(arrivals)} POSTs)")


if __name__ == "__main__":
    main()
