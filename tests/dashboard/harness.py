"""What the dashboard tests stand on: the API over urllib, the database over psql, and a
headless chromium driven by Selenium, with bounded waits only (never a fixed sleep).

The browser gets a script injected before any page script (through the DevTools protocol,
which the page's CSP does not govern) that records CSP violations and replaces
`window.alert` by a recorder, so an XSS that got through shows up as data instead of a
dialog that would block the driver.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_SECS = 10
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without these, chromium on a machine without network stalls on its own background requests.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1280,900"]
RECORDER = """
window.__csp = [];
window.__alerts = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
window.alert = (m) => { window.__alerts.push(String(m)); };
"""


@dataclass
class Reply:
    status: int
    headers: dict
    text: str

    def json(self):
        return json.loads(self.text)


class Api:
    """The public API, as a client that is not the page sees it."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, token: str | None = None, body: str | bytes | None = None,
             json_body=None) -> Reply:
        headers = {}
        if token is not None:
            headers["x-token"] = token
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["content-type"] = "application/json"
        elif body is not None:
            data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                             resp.read().decode())
        except urllib.error.HTTPError as e:
            return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())

    def new_wallet(self) -> str:
        r = self.call("POST", "/token", body="token=new")
        assert r.status == 200, f"POST /token: {r.status} {r.text}"
        return r.text.strip()

    def kv_set(self, token: str, group: str, key: str, value: str, ttl: int | None = None):
        q = f"?ttl={ttl}" if ttl else ""
        r = self.call("POST", f"/kv/{quote(group)}/{quote(key)}{q}", token, body=value)
        assert r.status == 200, f"kv set {group}/{key}: {r.status} {r.text}"


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class Db:
    """The proxy's database as its superuser (EV_ADMIN_URL), to fund or empty a wallet."""

    def __init__(self, url: str):
        self.url = url

    def query(self, sql: str) -> str:
        out = subprocess.run(["psql", self.url, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, f"psql: {out.stderr.strip()}"
        return out.stdout.strip()

    @staticmethod
    def token_hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def set_balance(self, token: str, balance: int):
        self.query(f"update echovalue.wallets set balance = {int(balance)} "
                   f"where hash = '{self.token_hash(token)}'")

    def balance(self, token: str) -> int:
        return int(self.query(f"select balance from echovalue.wallets where hash = '{self.token_hash(token)}'"))

    def wallet_id(self, token: str) -> int:
        return int(self.query(f"select id from echovalue.wallets where hash = '{self.token_hash(token)}'"))


class Page:
    """The dashboard in chromium, by the ids the page gives its elements."""

    def __init__(self, base: str, shots: str):
        self.base = base.rstrip("/")
        self.shots = shots
        self.console: list[dict] = []  # every browser console entry, kept across get_log calls
        self.profile = tempfile.mkdtemp(prefix="ev-dashboard-chromium.")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={self.profile}"]:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(WAIT_SECS * 3)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})

    def quit(self):
        try:
            self.driver.quit()
        finally:
            subprocess.run(["rm", "-rf", self.profile], check=False)

    # --- waiting and reading -------------------------------------------------------------

    def wait(self, condition, what: str, timeout: float = WAIT_SECS):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                                 ).until(lambda d: condition())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None

    def el(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.el(css).text

    def idle(self, timeout: float = WAIT_SECS):
        """Waits until every API call the page made is answered and rendered: no button busy
        (a button is disabled until its action ends) and no call in flight (api.js counts them
        on <html data-inflight>)."""
        self.wait(lambda: not self.els("[aria-busy]") and
                  self.js("return document.documentElement.dataset.inflight || '0'") == "0",
                  "the API calls to be answered", timeout)

    def press(self, css: str):
        """Clicks an element once it can be clicked, scrolled to the middle of the window
        (the status bar is fixed at the bottom)."""
        self.wait(lambda: self.el(css).is_displayed() and self.el(css).is_enabled(), f"{css} to be clickable")
        el = self.el(css)
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()

    def click(self, css: str, timeout: float = WAIT_SECS):
        """press, then wait for the call it makes to be answered."""
        self.press(css)
        self.idle(timeout)

    def confirm(self, css: str):
        """A button that acts on the second click (delete, revoke)."""
        self.press(css)
        self.wait(lambda: self.el(css).text.startswith("Confirm"), f"{css} to ask for confirmation")
        self.press(css)
        self.idle()

    def fill(self, css: str, value: str):
        el = self.el(css)
        el.clear()
        if value:
            el.send_keys(value)

    def choose(self, css: str, value: str):
        Select(self.el(css)).select_by_value(value)

    def check(self, css: str, on: bool):
        if self.el(css).is_selected() != on:
            self.press(css)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def rows(self, table_css: str) -> list:
        return self.els(f"{table_css} tbody tr")

    def cells(self, row) -> list[str]:
        return [td.text for td in row.find_elements(By.CSS_SELECTOR, "td, th")]

    def status_bar(self) -> dict:
        return {k: self.text(f"#status-{k}") for k in ("call", "code", "cost", "balance")}

    # --- navigation -----------------------------------------------------------------------

    def open(self):
        self.driver.get(self.base + "/dashboard")
        self.wait(lambda: self.el("#token-form").is_displayed() or self.el("#tabs").is_displayed(),
                  "the dashboard to start")

    def sign_in(self, token: str):
        """A fresh page (no token kept), then the token pasted and submitted."""
        self.driver.get(self.base + "/dashboard")
        self.js("sessionStorage.clear()")
        self.open()
        self.fill("#token-input", token)
        self.press("#token-save")
        self.wait(lambda: self.el("#tabs").is_displayed() or self.text("#token-msg"), "the sign-in to end")
        assert self.el("#tabs").is_displayed(), f"not signed in: {self.text('#token-msg')!r}"
        self.wait(lambda: self.text("#wallet-balance") != "–" or self.text("#wallet-msg"), "the wallet to load")
        self.idle()

    def tab(self, view: str):
        self.press(f"#tab-{view}")
        self.wait(lambda: self.el(f"#view-{view}").is_displayed(), f"the {view} view")
        self.idle()

    def shot(self, name: str):
        """A PNG of the whole page (the window grown to the document's height)."""
        os.makedirs(self.shots, exist_ok=True)
        height, chrome = self.js("return [Math.max(document.documentElement.scrollHeight, 760),"
                                 " window.outerHeight - window.innerHeight]")
        self.driver.set_window_size(1280, min(int(height) + int(chrome), 6000))
        try:
            self.driver.save_screenshot(os.path.join(self.shots, f"{name}.png"))
        finally:
            self.driver.set_window_size(1280, 900)

    # --- what the browser saw -------------------------------------------------------------

    def console_entries(self) -> list[dict]:
        try:
            self.console.extend(self.driver.get_log("browser"))
        except Exception:  # a driver without the log endpoint: nothing to add
            pass
        return self.console

    def response_body(self, url_suffix: str) -> str:
        """The body of the newest response the page got from a URL ending in url_suffix."""
        request_id = None
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.responseReceived" and \
                    msg["params"]["response"]["url"].endswith(url_suffix):
                request_id = msg["params"]["requestId"]
        assert request_id, f"no response from …{url_suffix} in the browser's network log"
        return self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": request_id})["body"]

    def drain_network_log(self):
        self.driver.get_log("performance")
