#!/usr/bin/env python3
"""Run the seeds' own client snippets against a running echovalue service.

The seed documents (../shared/seeds/) show the API through Python (`requests`) and JavaScript
(`fetch`) snippets. This script finds those snippets by content in the seed text, replaces only
the base URL `https://api.echovalue.dev` and the placeholder token `mytoken`, runs each with
`python3` / `node`, and checks what it prints and which HTTP statuses it got. If a snippet this
script expects is no longer in the seed, that case fails: a change in the seed text is noticed.

Seed text is stored with its line breaks collapsed, so a snippet is first put back on separate
lines (`reflow`): a newline before each statement that starts at bracket depth 0, and a
comment ends where the next statement starts. Nothing else in a snippet is changed.

The token the snippets use is the one printed by that language's own "Generate Token"
snippet, so the whole flow runs through the documented calls. Seed 002's snippets then run
again with a read-only token of that wallet (SPEC section 15): reads pass, writes get 403.

Usage: run_snippets.py --base-url http://127.0.0.1:PORT [--seeds-dir DIR] [--list] [-k TEXT]
Prints one line per case and `seeds: N passed, N failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from typing import Callable

from snippets import (JS_PRELUDE, PY_PRELUDE, STATUS_MARK, Snippet, reflow, snippets_001,
                      snippets_002)

SEED_BASE = "https://api.echovalue.dev"
TOKEN_RE = re.compile(r"^ev_tok_sk_live_[0-9a-z]{32}[0-9a-z]{6}$")
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
TIMEOUT_S = 30

def token_checksum_ok(token: str) -> bool:
    head, tail = token[:47], token[47:]
    value = zlib.crc32(head.encode()) % 36**6
    digits = ""
    for _ in range(6):
        value, r = divmod(value, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits == tail


@dataclass
class Run:
    stdout: str
    stderr: str
    code: int
    statuses: list[int]


@dataclass
class Case:
    name: str
    seed: str
    section: str
    lang: str
    signature: str  # text the snippet must contain; the first snippet with it is the case's
    statuses: list[int]
    check: Callable[[Run, dict], str | None] = lambda run, ctx: None
    makes_token: bool = False
    extra: dict = field(default_factory=dict)
    # the snippet's own error handling fails (a 403 body is not the JSON it parses)
    errors: bool = False


# --- checks: return None when fine, else what is wrong -------------------------------------


def check_token(run: Run, ctx: dict) -> str | None:
    token = run.stdout.strip()
    if not TOKEN_RE.match(token):
        return f"printed {token[:60]!r}, not a token of the documented format"
    if not token_checksum_ok(token):
        return "token checksum does not match its first 47 characters"
    return None


def check_wallet_py(run: Run, ctx: dict) -> str | None:
    try:
        data = ast.literal_eval(run.stdout.strip())
    except (ValueError, SyntaxError):
        return f"printed {run.stdout.strip()[:200]!r}, not a dict"
    return check_wallet_fields(data, ctx)


def check_wallet_js(run: Run, ctx: dict) -> str | None:
    out = run.stdout
    m = {
        k: re.search(p, out)
        for k, p in (("wallet", r"wallet: (\d+)"), ("created", r"created: '([^']+)'"), ("hash", r"hash: '([^']+)'"))
    }
    if not all(m.values()):
        return f"printed {out.strip()[:200]!r}, missing wallet/created/hash"
    return check_wallet_fields({k: v.group(1) for k, v in m.items()}, ctx)


def check_wallet_fields(data, ctx: dict) -> str | None:
    if not isinstance(data, dict) or not {"wallet", "created", "hash"} <= set(data):
        return f"got {data!r}, missing wallet/created/hash"
    wallet = int(data["wallet"])
    if not 0 < wallet < 100:
        return f"wallet {wallet}: a new token has 100 credits and this call costs 1"
    if not RFC3339_Z.match(str(data["created"])):
        return f"created {data['created']!r} is not RFC 3339 UTC"
    expected = hashlib.sha256(ctx["token"].encode()).hexdigest()
    if data["hash"] != expected:
        return "hash is not the SHA-256 of the token"
    return None


def check_hello(run: Run, ctx: dict) -> str | None:
    if run.stdout.strip() != "hello world":
        return f"printed {run.stdout.strip()[:100]!r}, expected 'hello world'"
    return None


def check_empty(run: Run, ctx: dict) -> str | None:
    return None if not run.stdout.strip() else f"printed {run.stdout.strip()[:100]!r}"


def check_logs_py(run: Run, ctx: dict) -> str | None:
    try:
        data = ast.literal_eval(run.stdout.strip())
    except (ValueError, SyntaxError):
        return f"printed {run.stdout.strip()[:200]!r}, not a dict"
    if not isinstance(data, dict) or not isinstance(data.get("logs"), list):
        return f"got {str(data)[:200]!r}, no logs list"
    logs = data["logs"]
    # The earlier snippets made at least five logged calls, so n=5 returns five.
    if data.get("n") != 5 or len(logs) != 5:
        return f"n={data.get('n')!r} with {len(logs)} entries, expected 5"
    need = {"id", "method", "path", "timestamp", "expiration", "cost", "balance"}
    for entry in logs:
        if not need <= set(entry):
            return f"log entry {entry!r} lacks {sorted(need - set(entry))}"
    if not any(e["path"].startswith("/kv/default/mykey") for e in logs):
        return "no /kv/default/mykey call in the last five log entries"
    return None


def check_logs_js(run: Run, ctx: dict) -> str | None:
    out = run.stdout
    if not re.search(r"\bn: 5\b", out) or "logs: [" not in out:
        return f"printed {out.strip()[:200]!r}, expected logs and n: 5"
    if "/kv/default/mykey" not in out:
        return "no /kv/default/mykey call in the last five log entries"
    return None


def check_headers(run: Run, ctx: dict) -> str | None:
    if not re.search(r"^Cost: 1$", run.stdout, re.M) or not re.search(r"^Balance: \d+$", run.stdout, re.M):
        return f"printed {run.stdout.strip()[:200]!r}, expected 'Cost: 1' and 'Balance: N'"
    return None


def webhook_fields(data, ctx: dict) -> str | None:
    """GET /webhook after the seed's configure call: redacted headers, address, hash, secret."""
    if not isinstance(data, dict):
        return f"got {data!r}, not an object"
    if data.get("webhook") != "https://yourdomain.com/webhook":
        return f"webhook {data.get('webhook')!r}, expected the configured URL"
    if data.get("headers") != {"Authorization": "<redacted>"}:
        return f"headers {data.get('headers')!r}, expected the values redacted"
    email = str(data.get("email", ""))
    if not re.match(r"^[0-9a-z]+@[0-9a-z.-]+$", email) or ctx["token"] in email:
        return f"email {email!r} is not an opaque mailbox address"
    if data.get("hash") != hashlib.sha256(ctx["token"].encode()).hexdigest():
        return "hash is not the SHA-256 of the token"
    if not str(data.get("secret", "")).startswith("whsec_"):
        return f"secret {str(data.get('secret'))[:10]!r}… is not a whsec_ signing secret"
    return None


def check_webhook_py(run: Run, ctx: dict) -> str | None:
    try:
        data = ast.literal_eval(run.stdout.strip())
    except (ValueError, SyntaxError):
        return f"printed {run.stdout.strip()[:200]!r}, not a dict"
    return webhook_fields(data, ctx)


def check_webhook_js(run: Run, ctx: dict) -> str | None:
    out = run.stdout
    fields = {
        k: re.search(p, out)
        for k, p in (("webhook", r"webhook: '([^']+)'"), ("auth", r"Authorization: '([^']+)'"),
                     ("email", r"email: '([^']+)'"), ("hash", r"hash: '([^']+)'"), ("secret", r"secret: '([^']+)'"))
    }
    if not all(fields.values()):
        return f"printed {out.strip()[:300]!r}, missing webhook/headers/email/hash/secret"
    data = {k: v.group(1) for k, v in fields.items()}
    data["headers"] = {"Authorization": data.pop("auth")}
    return webhook_fields(data, ctx)


KV = "https://api.echovalue.dev/kv/default/mykey"
HOOK = "https://api.echovalue.dev/webhook"


def cases() -> list[Case]:
    out = []
    for lang, tm in (("python", "requests."), ("js", "fetch(")):
        py = lang == "python"
        out += [
            Case(f"002 {lang} generate token", "002", "Token Management", lang,
                 "data={'token': 'new'}" if py else "body: 'token=new'", [200], check_token, makes_token=True),
            Case(f"002 {lang} wallet balance", "002", "Token Management", lang,
                 f"{tm}get('https://api.echovalue.dev/token'," if py else "fetch('https://api.echovalue.dev/token', { headers",
                 [200], check_wallet_py if py else check_wallet_js),
            Case(f"002 {lang} authentication example (key not set yet)", "002", "Authentication", lang,
                 f"{tm}get('{KV}'" if py else f"fetch('{KV}', {{ headers", [404], check_empty),
            Case(f"002 {lang} kv set (and with ttl)", "002", "Key-Value Store", lang,
                 "data='hello world'" if py else "body: 'hello world'", [200, 200], check_empty),
            Case(f"002 {lang} kv get", "002", "Key-Value Store", lang,
                 "print(response.text)" if py else ".then(data => console.log(data))", [200], check_hello),
            Case(f"002 {lang} kv delete", "002", "Key-Value Store", lang,
                 f"{tm}delete('{KV}'" if py else "method: 'DELETE'", [200], check_empty),
            Case(f"002 {lang} logs", "002", "Logs", lang,
                 "params={'n': 5}" if py else "token/logs?n=5", [200], check_logs_py if py else check_logs_js),
            Case(f"002 {lang} response headers (deleted key)", "002", "Response Headers", lang,
                 "headers.get('x-cost')" if py else "headers.get('x-cost')", [404], check_headers),
            Case(f"002 {lang} webhook configure", "002", "Mail2Webhook Service", lang,
                 f"{tm}post('{HOOK}'" if py else "JSON.stringify({", [200], check_empty),
            Case(f"002 {lang} webhook get", "002", "Mail2Webhook Service", lang,
                 "print(response.json())" if py else ".then(data => console.log(data))", [200],
                 check_webhook_py if py else check_webhook_js),
            Case(f"002 {lang} webhook delete", "002", "Mail2Webhook Service", lang,
                 f"{tm}delete('{HOOK}'" if py else "method: 'DELETE'", [200], check_empty),
            Case(f"001 {lang} generate token", "001", "Token Management", lang,
                 "data={'token': 'new'}" if py else "body: 'token=new'", [200], check_token, makes_token=True),
            Case(f"001 {lang} wallet balance", "001", "Token Management", lang,
                 "requests.get('https://api.echovalue.dev/token'," if py else "fetch('https://api.echovalue.dev/token', { headers",
                 [200], check_wallet_py if py else check_wallet_js),
        ]
    return out


# A token made with the scopes SPEC section 15 names for reading (kv:read, logs, wallet).
READ_ONLY_SCOPES = ["kv:read", "logs", "wallet"]


def read_only_cases() -> list[Case]:
    """Seed 002's snippets again with a read-only token: reads pass, writes and the webhook
    (its configuration and secret) get 403. The key is set first with the wallet's root token."""
    expect = {
        "wallet balance": ([200], None, False),
        "kv get": ([200], check_hello, False),
        "kv set (and with ttl)": ([403, 403], check_empty, False),
        "kv delete": ([403], check_empty, False),
        "logs": ([200], None, False),
        "webhook configure": ([403], check_empty, False),
        "webhook get": ([403], check_empty, True),  # nothing printed: no secret
        "webhook delete": ([403], check_empty, False),
    }
    out = []
    for case in cases():
        what = case.name.split(" ", 2)[2]
        if case.seed == "002" and what in expect:
            statuses, check, errors = expect[what]
            out.append(Case(f"{case.name} (read-only token)", case.seed, case.section, case.lang,
                            case.signature, statuses, check or case.check, errors=errors))
    return out


def http(base_url: str, method: str, path: str, token: str, body: bytes) -> bytes:
    req = urllib.request.Request(base_url.rstrip("/") + path, data=body, method=method,
                                 headers={"x-token": token, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
        return r.read()


def read_only_token(base_url: str, root: str) -> str:
    """A new read-only token of root's wallet, with the key the read snippets look up set."""
    spec = json.dumps({"label": "read-only", "scopes": READ_ONLY_SCOPES}).encode()
    made = json.loads(http(base_url, "POST", "/token/keys", root, spec))
    http(base_url, "POST", "/kv/default/mykey", root, b"hello world")
    return made["token"]


def find_snippet(case: Case, snippets: list[Snippet]) -> Snippet | None:
    for s in snippets:
        if s.seed == case.seed and s.section == case.section and s.lang == case.lang and case.signature in s.code:
            return s
    return None


def prepare(code: str, lang: str, base_url: str, token: str | None) -> str:
    code = reflow(code, lang).replace(SEED_BASE, base_url.rstrip("/"))
    if token is not None:
        code = re.sub(r"\bmytoken\b", token, code)
    return code


def execute(code: str, lang: str, workdir: pathlib.Path) -> Run:
    if lang == "python":
        path = workdir / "snippet.py"
        path.write_text(PY_PRELUDE + code)
        cmd = [sys.executable if sys.executable else "python3", str(path)]
    else:
        path = workdir / "snippet.mjs"
        path.write_text(JS_PRELUDE + code)
        cmd = ["node", str(path)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Run("", f"timed out after {TIMEOUT_S} s", -1, [])
    statuses = [int(m) for m in re.findall(rf"^{STATUS_MARK} (\d+)$", p.stderr, re.M)]
    stderr = "\n".join(line for line in p.stderr.splitlines() if not line.startswith(STATUS_MARK))
    return Run(p.stdout, stderr, p.returncode, statuses)


def main() -> int:
    here = pathlib.Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--seeds-dir", default=str(here.parents[1].parent / "shared" / "seeds"))
    ap.add_argument("--list", action="store_true", help="print the prepared snippets and exit")
    ap.add_argument("-k", default="", help="run only cases whose name contains this text")
    args = ap.parse_args()

    seeds = pathlib.Path(args.seeds_dir)
    snippets: list[Snippet] = []
    for pattern, parse in (("002_*.txt", snippets_002), ("001_*.txt", snippets_001)):
        files = sorted(seeds.glob(pattern))
        if files:
            snippets += parse(files[0].read_text(encoding="utf-8"))

    if args.list:
        for s in snippets:
            print(f"--- seed {s.seed} / {s.section} / {s.lang}")
            print(prepare(s.code, s.lang, args.base_url, None))
        return 0

    with tempfile.TemporaryDirectory(prefix="ev-seeds-") as tmp:
        return run_cases(args, snippets, pathlib.Path(tmp))


def error_summary(stderr: str) -> str:
    """The line of a traceback or Node error that names the error, not the whole stack."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"(unhandled rejection: )?[\w.]*(Error|Exception)\b", line)]
    return (named[-1] if named else lines[-1] if lines else "no output")[:300]


def run_cases(args: argparse.Namespace, snippets: list[Snippet], workdir: pathlib.Path) -> int:
    tokens: dict[tuple, str] = {}
    passed = failed = 0
    for case in cases() + read_only_cases():
        if args.k not in case.name:
            continue
        problem = None
        snippet = find_snippet(case, snippets)
        if snippet is None:
            problem = f"snippet not found in seed {case.seed} ({case.section}, {case.lang}, containing {case.signature!r})"
        root = tokens.get((case.seed, case.lang))
        token = root
        if problem is None and not case.makes_token and token is None:
            problem = "no token: this seed's generate-token snippet did not produce one"
        if problem is None and "(read-only token)" in case.name:
            if (case.seed, case.lang, "read-only") not in tokens:
                tokens[(case.seed, case.lang, "read-only")] = read_only_token(args.base_url, root)
            token = tokens[(case.seed, case.lang, "read-only")]
        if problem is None:
            code = prepare(snippet.code, case.lang, args.base_url, token)
            run = execute(code, case.lang, workdir)
            if case.makes_token and run.statuses == [429]:
                time.sleep(11)  # the per-address token rate limit is on in this database
                run = execute(code, case.lang, workdir)
            if (run.code != 0) != case.errors:
                problem = (f"exit code {run.code}: {error_summary(run.stderr)}" if run.code
                           else "exit code 0: the snippet should have failed on the 403 body")
            elif sorted(run.statuses) != sorted(case.statuses):
                problem = f"HTTP statuses {run.statuses}, expected {case.statuses}; output {run.stdout.strip()[:200]!r}"
            else:
                # (the wallet's hash is its root token's, whichever token asks)
                problem = case.check(run, {"token": root})
            if problem is None and case.makes_token:
                tokens[(case.seed, case.lang)] = run.stdout.strip()
        if problem is None:
            passed += 1
            print(f"ok    {case.name}")
        else:
            failed += 1
            print(f"FAIL  {case.name}: {problem}")
    print(f"seeds: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
