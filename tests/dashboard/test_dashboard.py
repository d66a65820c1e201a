#!/usr/bin/env python3
"""The dashboard (GET /dashboard) in a real browser: Debian's chromium, headless, driven by
Selenium 4, against a running proxy and its database.

Each case makes its own wallet (POST /token), acts through the page, and checks what the page
shows against what the API itself answers (urllib) or what the database holds (psql as the
superuser of EV_ADMIN_URL, to empty a wallet or sum its logs). Every wait is bounded.

Usage: test_dashboard.py --base-url http://127.0.0.1:PORT [-k TEXT]
Env: EV_ADMIN_URL (required), EV_SCREENSHOT_DIR (PNGs of every view; default ./screenshots).
Prints `ok - name` or `FAILED - name: reason` per case, then `dashboard: N passed, N failed`;
exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Api, Db, Page  # noqa: E402
from cases_kv import CASES as KV_CASES  # noqa: E402
from cases_more import CASES as MORE_CASES  # noqa: E402


class Ctx:
    def __init__(self, api: Api, db: Db, page: Page):
        self.api, self.db, self.page = api, db, page

    def signed_in_wallet(self) -> str:
        token = self.api.new_wallet()
        self.page.sign_in(token)
        return token


def case_balance(t: Ctx):
    """Paste a token: the balance, creation time and hash are GET /token's."""
    token = t.api.new_wallet()
    t.page.sign_in(token)
    p = t.page
    shown = p.text("#wallet-balance")
    assert shown == str(t.db.balance(token)), f"balance {shown!r}, database {t.db.balance(token)}"
    bar = p.status_bar()
    assert bar["cost"] == "1" and bar["balance"] == shown, f"status bar {bar}"
    r = t.api.call("GET", "/token", token)
    body = r.json()
    assert body["wallet"] == int(shown) - 1, f"GET /token says {body['wallet']} after the page's {shown}"
    assert p.text("#wallet-created") == body["created"], (p.text("#wallet-created"), body["created"])
    assert p.text("#wallet-hash") == body["hash"], (p.text("#wallet-hash"), body["hash"])
    assert p.js("return sessionStorage.getItem('echovalue.token')") == token, "token not in sessionStorage"
    assert p.js("return localStorage.length") == 0, "something was put in localStorage"
    assert token not in p.driver.current_url, "the token is in the URL"
    p.click("#wallet-refresh")
    assert p.text("#wallet-balance") == str(int(shown) - 2), f"after refresh {p.text('#wallet-balance')}"
    p.shot("wallet")


def case_recharge(t: Ctx):
    """Recharge buttons: 501's text until a tier has a link, then the link GET /recharge gives."""
    token = t.signed_in_wallet()
    p = t.page
    t.db.query("update echovalue.recharge_tiers set link = null where amount in (1, 3)")
    expected = t.api.call("GET", "/recharge?amount=1", token)
    assert expected.status == 501, f"GET /recharge without a link: {expected.status}"
    p.click("#recharge-1")
    assert p.text("#recharge-result") == f"501 {expected.text}", f"shown {p.text('#recharge-result')!r}"
    t.db.query("update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_dashboard' where amount = 3")
    try:
        link = t.api.call("GET", "/recharge?amount=3", token)
        assert link.status == 200, f"GET /recharge?amount=3: {link.status} {link.text}"
        p.click("#recharge-3")
        p.wait(lambda: p.els("#recharge-link"), "the payment link")
        assert p.text("#recharge-link") == link.text.strip(), (p.text("#recharge-link"), link.text)
        assert p.el("#recharge-link").get_attribute("href") == link.text.strip()
        p.shot("wallet-recharge")
    finally:
        t.db.query("update echovalue.recharge_tiers set link = null where amount = 3")


def case_forget_token(t: Ctx):
    """"Forget token" removes it from sessionStorage and shows the token form again."""
    t.signed_in_wallet()
    p = t.page
    p.press("#forget-token")
    p.wait(lambda: p.el("#token-form").is_displayed(), "the token form after forgetting")
    assert p.js("return sessionStorage.getItem('echovalue.token')") is None, "token still stored"
    assert not p.el("#tabs").is_displayed(), "views still shown"
    p.shot("signin")


def case_wrong_token(t: Ctx):
    """A token the API refuses: its 401 text, and nothing kept."""
    p = t.page
    p.driver.get(p.base + "/dashboard")
    p.js("sessionStorage.clear()")
    p.open()
    bad = "ev_tok_sk_live_" + "0" * 38
    expected = t.api.call("GET", "/token", bad)
    p.fill("#token-input", bad)
    p.press("#token-save")
    p.wait(lambda: p.text("#token-msg"), "the refusal")
    assert p.text("#token-msg") == f"{expected.status} {expected.text}", p.text("#token-msg")
    assert p.js("return sessionStorage.getItem('echovalue.token')") is None


def case_empty_wallet(t: Ctx):
    """A wallet at 0 credits: actions show the API's 402 `Insufficient credits`."""
    token = t.signed_in_wallet()
    p = t.page
    t.db.set_balance(token, 0)
    p.tab("kv")
    p.fill("#kv-group", "default")
    p.fill("#kv-key", "k")
    p.fill("#kv-value-input", "v")
    p.click("#kv-set")
    assert p.text("#kv-msg") == "402 Insufficient credits", f"shown {p.text('#kv-msg')!r}"
    bar = p.status_bar()
    assert (bar["code"], bar["cost"], bar["balance"]) == ("402", "0", "0"), f"status bar {bar}"
    p.tab("wallet")
    p.click("#wallet-refresh")
    assert p.text("#wallet-msg") == "402 Insufficient credits", p.text("#wallet-msg")
    # the balance shown is the refusal's x-balance, not the one loaded before
    assert p.text("#wallet-balance") == "0", f"balance shown {p.text('#wallet-balance')!r}"
    p.shot("wallet-empty")
    # signing in with the empty wallet works, and says why the balance is not shown
    p.sign_in(token)
    assert p.text("#wallet-msg") == "402 Insufficient credits", p.text("#wallet-msg")


def case_csp_and_console(t: Ctx):
    """CSP on the page and its assets; no CSP violation and no script error in the console."""
    for path in ["/dashboard", "/dashboard/static/app.js", "/dashboard/static/style.css"]:
        r = t.api.call("GET", path)
        assert r.status == 200, f"{path}: {r.status}"
        csp = r.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, f"{path}: CSP {csp!r}"
        assert "connect-src 'self'" in csp, f"{path}: CSP {csp!r}"
    p = t.page
    t.signed_in_wallet()
    for view in ["usage", "logs", "kv", "webhooks", "tokens", "settings", "wallet"]:
        p.tab(view)
    assert p.js("return window.__csp") == [], f"CSP violations: {p.js('return window.__csp')}"
    assert p.js("return window.__alerts") == [], f"alerts: {p.js('return window.__alerts')}"
    bad = []
    for entry in p.console_entries():
        msg = entry.get("message", "")
        if "Content Security Policy" in msg or "Refused to" in msg:
            bad.append(msg)
        elif entry.get("level") == "SEVERE" and "Failed to load resource" not in msg:
            bad.append(msg)  # a script error (refused API calls log "Failed to load resource")
    assert not bad, f"console: {bad[:5]}"


def case_labels(t):
    """Every form control of every view has a label, every button a text."""
    p = t.page
    t.signed_in_wallet()
    for view in ["usage", "logs", "kv", "webhooks", "tokens", "settings", "wallet"]:
        p.tab(view)
    unlabelled = p.js("""
        return [...document.querySelectorAll('input, select, textarea')]
          .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
          .map((el) => el.id || el.name || el.outerHTML.slice(0, 60));""")
    assert unlabelled == [], f"controls without a label: {unlabelled}"
    mute = p.js("""
        return [...document.querySelectorAll('button')]
          .filter((b) => !b.textContent.trim() && !b.getAttribute('aria-label'))
          .map((b) => b.id || b.outerHTML.slice(0, 60));""")
    assert mute == [], f"buttons without a text: {mute}"


CASES = [case_balance, case_recharge, case_forget_token, case_wrong_token, *KV_CASES,
         *MORE_CASES, case_empty_wallet, case_labels, case_csp_and_console]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("-k", default="", help="run only the cases whose name contains this")
    args = ap.parse_args()
    admin = os.environ.get("EV_ADMIN_URL")
    if not admin:
        print("FAILED - setup: EV_ADMIN_URL is not set")
        print("dashboard: 0 passed, 1 failed")
        return 1
    shots = os.environ.get("EV_SCREENSHOT_DIR") or os.path.join(os.getcwd(), "screenshots")
    os.makedirs(shots, exist_ok=True)
    passed = failed = 0
    try:
        page = Page(args.base_url, shots)
    except Exception as e:  # no browser: one failure, said plainly
        print(f"FAILED - start chromium: {type(e).__name__}: {e}")
        print("dashboard: 0 passed, 1 failed")
        return 1
    ctx = Ctx(Api(args.base_url), Db(admin), page)
    try:
        for case in CASES:
            name = case.__name__.removeprefix("case_").replace("_", " ")
            if args.k and args.k not in name:
                continue
            try:
                case(ctx)
                passed += 1
                print(f"ok - {name}", flush=True)
            except Exception as e:
                failed += 1
                reason = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
                print(f"FAILED - {name}: {reason.splitlines()[0] if reason else 'assertion'}", flush=True)
                if not isinstance(e, AssertionError):
                    traceback.print_exc(limit=3)
                try:
                    page.shot(f"FAILED-{name.replace(' ', '-')}")
                except Exception:
                    pass
    finally:
        page.quit()
    print(f"dashboard: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
