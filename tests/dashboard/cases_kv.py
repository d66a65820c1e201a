"""Dashboard cases: the KV view, the logs and the usage chart."""

from __future__ import annotations

from harness import quote

HOSTILE_KEY = "<img src=x onerror=alert(1)>"
HOSTILE_VALUE = "<script>alert(2)</script><b>bold</b> & <i onmouseover=alert(3)>i</i>"


def key_rows(p) -> list[tuple[str, str]]:
    """(key, expires) of every row of the keys table."""
    return [(r.get_attribute("data-key"), p.cells(r)[1]) for r in p.rows("#kv-keys")]


def case_kv_set_get_delete(t):
    """Set a key with a TTL: listed with GET /kv/{group}'s expiry; its value; deleted."""
    token = t.signed_in_wallet()
    p = t.page
    p.tab("kv")
    value = "hello dashboard ✓\nsecond line"
    p.fill("#kv-group", "dash")
    p.fill("#kv-key", "greeting")
    p.fill("#kv-ttl", "600")
    p.fill("#kv-value-input", value)
    p.click("#kv-set")
    assert p.text("#kv-msg") == "OK", f"set: {p.text('#kv-msg')!r}"
    p.wait(lambda: p.text("#kv-keys-group") == "dash", "the group's listing")
    listing = t.api.call("GET", "/kv/dash", token).json()
    assert key_rows(p) == [(k["key"], k["expires"]) for k in listing["keys"]], \
        f"shown {key_rows(p)}, API {listing['keys']}"
    p.fill("#kv-value-input", "")
    p.click("#kv-keys tr[data-key='greeting'] [data-action='view']")
    got = t.api.call("GET", "/kv/dash/greeting", token)
    assert got.status == 200 and got.text == value
    assert p.js("return document.getElementById('kv-value').textContent") == value, p.text("#kv-value")
    assert p.el("#kv-value-input").get_attribute("value") == value
    p.shot("kv")
    p.confirm("#kv-keys tr[data-key='greeting'] [data-action='delete']")
    assert p.text("#kv-msg").startswith("OK"), p.text("#kv-msg")
    assert not p.els("#kv-keys tr[data-key='greeting']"), "deleted key still listed"
    gone = t.api.call("GET", "/kv/dash/greeting", token)
    assert gone.status == 404, f"after delete: {gone.status} {gone.text}"
    p.click("#kv-get")
    assert p.text("#kv-msg") == f"404 {gone.text}", f"get after delete: {p.text('#kv-msg')!r}"
    # a bad ttl: the API's own words
    p.fill("#kv-ttl", "-5")
    p.click("#kv-set")
    bad = t.api.call("POST", "/kv/dash/greeting?ttl=-5", token, body="x")
    assert p.text("#kv-msg") == f"400 {bad.text}", f"bad ttl: {p.text('#kv-msg')!r} vs {bad.text!r}"


def case_kv_listing_pages(t):
    """Groups with their counts, and a group's keys across pages, as GET /kv and /kv/{g} page them."""
    token = t.signed_in_wallet()
    p = t.page
    keys = [f"k{i:02d}" for i in range(1, 6)]
    for k in keys:
        t.api.kv_set(token, "pages", k, f"value of {k}")
    t.api.kv_set(token, "other", "x", "1")
    p.tab("kv")  # lists the groups on first open
    p.click("#kv-groups-load")
    groups = t.api.call("GET", "/kv", token).json()["groups"]
    shown = [(r.get_attribute("data-group"), p.cells(r)[1]) for r in p.rows("#kv-groups")]
    assert shown == [(g["group"], str(g["keys"])) for g in groups], f"groups {shown} vs {groups}"
    p.fill("#kv-list-group", "pages")
    p.fill("#kv-list-limit", "2")
    p.click("#kv-list")
    cursor, seen = "", []
    for page_no in range(1, 4):
        r = t.api.call("GET", f"/kv/pages?limit=2{'&cursor=' + quote(cursor) if cursor else ''}", token).json()
        want = [(k["key"], k["expires"]) for k in r["keys"]]
        assert key_rows(p) == want, f"page {page_no}: shown {key_rows(p)}, API {want}"
        seen += [k for k, _ in want]
        next_shown = p.el("#kv-keys-next").is_displayed()
        assert next_shown == (r["cursor"] is not None), f"page {page_no}: next button {next_shown}, cursor {r['cursor']}"
        if r["cursor"] is None:
            break
        cursor = r["cursor"]
        p.click("#kv-keys-next")
    assert seen == keys, f"pages held {seen}"
    # a group name opens its keys
    p.click("#kv-groups tr[data-group='other'] button")
    assert p.text("#kv-keys-group") == "other" and [k for k, _ in key_rows(p)] == ["x"], key_rows(p)


def case_hostile_names_are_text(t):
    """A key and value full of markup are shown as text: no element, no alert, no CSP report."""
    token = t.signed_in_wallet()
    p = t.page
    t.api.kv_set(token, "xss", HOSTILE_KEY, HOSTILE_VALUE)
    r = t.api.call("POST", "/token/keys", token, json_body={"label": "<img src=x onerror=alert(4)>"})
    assert r.status == 200, r.text
    p.tab("kv")
    p.click("#kv-groups-load")
    p.fill("#kv-list-group", "xss")
    p.click("#kv-list")
    cells = [p.cells(r)[0] for r in p.rows("#kv-keys")]
    assert cells == [HOSTILE_KEY], f"key shown as {cells}"
    p.click("#kv-keys tbody tr [data-action='view']")
    assert p.js("return document.getElementById('kv-value').textContent") == HOSTILE_VALUE
    p.tab("tokens")
    labels = [r.find_element("css selector", ".label").text for r in p.rows("#tokens-table")]
    assert "<img src=x onerror=alert(4)>" in labels, f"labels {labels}"
    injected = p.js("return document.querySelectorAll('#app img, #app script, #app b, #app i').length")
    assert injected == 0, f"{injected} elements made from API data"
    assert p.js("return window.__alerts") == [], f"alert ran: {p.js('return window.__alerts')}"
    assert p.js("return window.__csp") == [], f"CSP violations: {p.js('return window.__csp')}"
    p.tab("kv")
    p.shot("kv-hostile")


def log_rows(p, table="#logs-table"):
    return [(r.get_attribute("data-id"), p.cells(r)) for r in p.rows(table)]


def entry_cells(e) -> list[str]:
    return [e["timestamp"], e["method"], e["path"], e["endpoint"], str(e["status_code"]),
            str(e["cost"]), str(e["balance"]), e.get("error", "")]


def case_logs_view(t):
    """The logs table is GET /token/logs's entries, newest first, with the type filter and n."""
    token = t.signed_in_wallet()
    p = t.page
    for k in ["a", "b", "c"]:
        t.api.kv_set(token, "logs", k, k)
    t.api.call("GET", "/kv/logs/missing", token)
    t.api.call("GET", "/token", token)
    p.tab("logs")
    p.fill("#logs-n", "10")
    p.choose("#logs-type", "")
    p.click("#logs-load")
    # the API's view afterwards: its newest entry is the page's own logs request
    api = t.api.call("GET", "/token/logs?n=11", token).json()["logs"][1:]
    shown = log_rows(p)
    assert [i for i, _ in shown] == [e["id"] for e in api], f"ids {[i for i, _ in shown]} vs {[e['id'] for e in api]}"
    assert [c for _, c in shown] == [entry_cells(e) for e in api], f"cells differ: {shown[:2]} vs {api[:2]}"
    assert any(c[7] == "Key Not Found" for _, c in shown), "the 404's error not shown"
    assert p.text("#logs-msg").startswith(f"{len(api)} entries"), p.text("#logs-msg")
    p.shot("logs")
    p.choose("#logs-type", "kv")
    p.click("#logs-load")
    kv = t.api.call("GET", "/token/logs?type=kv&n=10", token).json()["logs"]
    shown = log_rows(p)
    assert [c for _, c in shown] == [entry_cells(e) for e in kv], f"kv filter: {shown} vs {kv}"
    assert len(kv) == 4 and all(c[3] == "kv" for _, c in shown), f"kv rows {shown}"
    p.fill("#logs-n", "0")
    p.click("#logs-load")
    bad = t.api.call("GET", "/token/logs?n=0", token)
    assert p.text("#logs-msg") == f"400 {bad.text}", f"n=0: {p.text('#logs-msg')!r} vs {bad.text!r}"


def case_usage_chart(t):
    """Credits per day and endpoint: the newest 100 entries' costs, as the database sums them."""
    token = t.signed_in_wallet()
    p = t.page
    for k in ["a", "b", "c"]:
        t.api.kv_set(token, "usage", k, k)
    t.api.call("GET", "/webhook", token)
    t.api.call("GET", "/token/settings", token)
    p.tab("usage")
    assert not p.els("#usage-chart"), "usage loaded before the button was pressed"
    p.click("#usage-load")
    p.wait(lambda: p.els("#usage-table"), "the usage table")
    wallet = t.db.wallet_id(token)
    # offset 1: the newest entry is the page's own logs request, logged after its answer
    rows = t.db.query(
        "select to_char(created at time zone 'UTC', 'YYYY-MM-DD'), endpoint, sum(cost) from "
        f"(select * from echovalue.logs where wallet_id = {wallet} order by id desc offset 1 limit 100) l "
        "group by 1, 2 order by 1, 2")
    want = {}
    for line in rows.splitlines():
        day, endpoint, total = line.split("|")
        want[(day, endpoint)] = int(total)
    shown = {}
    for r in p.rows("#usage-table"):
        day = r.get_attribute("data-day")
        for td in r.find_elements("css selector", "td[data-endpoint]"):
            if td.text != "0":
                shown[(day, td.get_attribute("data-endpoint"))] = int(td.text)
    assert shown == want, f"chart table {shown}, database {want}"
    total = sum(want.values())
    assert p.el("#usage-summary").get_attribute("data-total") == str(total)
    assert p.text("#usage-table tfoot td.total") == str(total)
    segments = p.els("#usage-chart rect.seg")
    assert len(segments) == len(want), f"{len(segments)} bar segments for {len(want)} day/endpoint sums"
    entries = t.db.query(f"select least(count(*) - 1, 100) from echovalue.logs where wallet_id = {wallet}")
    assert p.text("#usage-summary").startswith(f"{entries} entries"), p.text("#usage-summary")
    assert p.status_bar()["cost"] == entries, f"the load cost {p.status_bar()['cost']}, {entries} entries"
    p.shot("usage")


CASES = [case_kv_set_get_delete, case_kv_listing_pages, case_hostile_names_are_text,
         case_logs_view, case_usage_chart]
