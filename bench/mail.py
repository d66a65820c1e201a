#!/usr/bin/env python3
"""Mail2Webhook throughput and latency: SMTP DATA to webhook receipt.

Against a running database (ADMIN_URL, a superuser libpq URL for psql) and mailhook (SMTP at
SMTP_HOST:SMTP_PORT, on a database with echovalue.webhook_allow_insecure = on): makes a funded wallet
whose webhook is a local HTTP receiver on this process, sends N messages over C SMTP
connections with smtplib, and prints messages per second (first DATA to last receipt) and the
latency from each message's DATA to its webhook's arrival (p50, p99, max). Not a test: figures
only. Settings (env): N (default 2000), C (default 8).
"""
import http.server
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from email.message import EmailMessage

ADMIN_URL = os.environ["ADMIN_URL"]
SMTP_HOST = os.environ.get("SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ["SMTP_PORT"])
N = int(os.environ.get("N", "2000"))
C = int(os.environ.get("C", "8"))

received = {}  # externalMessageId -> first arrival (monotonic)
lock = threading.Lock()
done = threading.Event()


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        now = time.monotonic()
        ext = json.loads(body).get("externalMessageId")
        with lock:
            received.setdefault(ext, now)
            if len(received) >= N:
                done.set()
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def psql(sql):
    out = subprocess.run(["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", ADMIN_URL, "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main():
    # a backlog for every delivery slot: the default of 5 refuses connections, and refused
    # deliveries come back only after their retry delay
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/bench" % server.server_address[1]
    token = psql("set echovalue.token_rate_seconds = 0; "
                 "select body from echovalue.token_new(client_addr => '10.250.%d.%d')"
                 % (os.getpid() % 250, int(time.time()) % 250))
    email = psql(
        "update echovalue.wallets set balance = 1000000000 "
        " where hash = encode(sha256('%s'::bytea), 'hex'); "
        "insert into echovalue.webhooks (wallet_id, url) "
        "select id, '%s' from echovalue.wallets where hash = encode(sha256('%s'::bytea), 'hex'); "
        "select (echovalue.webhook_get(token => '%s')).body::json->>'email'" % (token, url, token, token))

    sent = {}

    def sender(worker):
        s = smtplib.SMTP(SMTP_HOST, SMTP_PORT)
        for k in range(worker, N, C):
            m = EmailMessage()
            m["From"] = "bench@example.com"
            m["To"] = email
            m["Subject"] = "bench %d" % k
            m["Message-ID"] = "<bench-%d-%d@bench>" % (os.getpid(), k)
            m.set_content("message %d of the Mail2Webhook benchmark\n" % k)
            t0 = time.monotonic()
            s.send_message(m)  # MAIL, RCPT, DATA: returns after the 250
            sent["bench-%d-%d@bench" % (os.getpid(), k)] = t0
        s.quit()

    start = time.monotonic()
    threads = [threading.Thread(target=sender, args=(w,)) for w in range(C)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    smtp_done = time.monotonic()
    if not done.wait(timeout=300):
        print("bench: only %d of %d webhooks arrived" % (len(received), N), file=sys.stderr)
        sys.exit(1)
    end = max(received.values())
    lat = sorted((received[k] - sent[k]) * 1000 for k in sent)
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
    print("messages: %d over %d SMTP connections" % (N, C))
    print("SMTP accepted: %.0f msg/s" % (N / (smtp_done - start)))
    print("end to end (first DATA to last webhook): %.0f msg/s" % (N / (end - start)))
    print("latency DATA -> webhook: p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (pct(50), pct(99), lat[-1]))


if __name__ == "__main__":
    main()
