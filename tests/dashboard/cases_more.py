"""Dashboard cases: API tokens, webhooks, settings."""

from __future__ import annotations

import json

from cases_kv import log_rows, entry_cells

SCOPES = ["kv:read", "kv:write", "logs", "wallet", "webhook", "settings"]


def token_row(p, label):
    rows = [r for r in p.rows("#tokens-table") if r.get_attribute("data-label") == label]
    assert len(rows) == 1, f"{len(rows)} rows labelled {label!r}"
    return rows[0]


def token_cell(p, label, name, css=""):
    return token_row(p, label).find_element("css selector", f"td[data-field='{name}'] {css}".strip()).text


def case_tokens_create_and_revoke(t):
    """A token with a label, a limit, a scope and a group: shown once, listed, revoked."""
    root = t.signed_in_wallet()
    p = t.page
    p.tab("tokens")
    p.wait(lambda: p.rows("#tokens-table"), "the token list")
    p.fill("#tok-label", "ci-dash")
    p.fill("#tok-daily", "50")
    for s in SCOPES:
        p.check(f"#tok-scope-{s.replace(':', '-')}", s == "kv:read")
    p.fill("#tok-groups", "metrics")
    p.click("#tok-create")
    p.wait(lambda: p.el("#new-token-panel").is_displayed(), "the new token")
    new = p.el("#new-token").get_attribute("value")
    assert new.startswith("ev_tok_sk_live_") and len(new) == 53, f"new token {new!r}"
    # the token works as made: kv:read in group metrics only
    assert t.api.call("GET", "/kv/metrics/x", new).status == 404
    assert t.api.call("GET", "/kv/other/x", new).status == 403
    assert t.api.call("GET", "/token", new).status == 403
    listed = {k["label"]: k for k in t.api.call("GET", "/token/keys", root).json()["keys"]}["ci-dash"]
    assert listed["scopes"] == ["kv:read"] and listed["groups"] == ["metrics"], listed
    assert listed["limits"] == {"per_request": None, "daily": 50, "monthly": None}, listed["limits"]
    assert token_cell(p, "ci-dash", "label", ".prefix") == listed["prefix"]
    assert token_cell(p, "ci-dash", "scopes", ".chips") == "kv:read"
    assert token_cell(p, "ci-dash", "scopes", ".groups") == "KV groups: metrics"
    assert token_cell(p, "ci-dash", "limits", "[data-limit='daily']") == "per 24 hours: 50"
    assert token_cell(p, "ci-dash", "limits", "[data-limit='monthly']") == "per 30 days: none"
    assert token_cell(p, "ci-dash", "usage") == "0 / 0"
    assert token_cell(p, "ci-dash", "status") == "active"
    assert p.js("return document.body.innerText.split(arguments[0]).length - 1", new) == 0, \
        "the new token is shown as text outside its field"
    p.click("#new-token-copy")
    p.wait(lambda: p.text("#new-token-copied"), "the copy to be reported")
    p.shot("tokens")
    p.click("#new-token-done")
    assert not p.el("#new-token-panel").is_displayed() and p.el("#new-token").get_attribute("value") == ""
    assert new not in p.driver.page_source, "the new token is still in the page"
    p.confirm(f"#tokens-table tr[data-id='{listed['id']}'] [data-action='revoke']")
    p.wait(lambda: token_cell(p, "ci-dash", "status").startswith("revoked"), "the token marked revoked")
    revoked = {k["label"]: k for k in t.api.call("GET", "/token/keys", root).json()["keys"]}["ci-dash"]
    assert token_cell(p, "ci-dash", "status") == f"revoked {revoked['revoked']}"
    assert not token_row(p, "ci-dash").find_elements("css selector", "[data-action='revoke']")
    assert t.api.call("GET", "/kv/metrics/x", new).status == 401, "revoked token still works"
    # a limit the API refuses: its text
    p.fill("#tok-label", "bad")
    p.fill("#tok-daily", "-1")
    p.click("#tok-create")
    bad = t.api.call("POST", "/token/keys", root, json_body={"label": "bad", "limits": {"daily": "-1"},
                                                             "scopes": ["kv:read"], "groups": ["metrics"]})
    assert p.text("#token-create-msg") == f"{bad.status} {bad.text}", (p.text("#token-create-msg"), bad.text)


def case_non_root_token_is_forbidden(t):
    """A token that is not the root one: the tokens view shows the API's 403."""
    root = t.api.new_wallet()
    sub = t.api.call("POST", "/token/keys", root, json_body={"label": "reader"}).json()["token"]
    p = t.page
    p.sign_in(sub)
    expected = t.api.call("GET", "/token/keys", sub)
    assert expected.status == 403
    p.tab("tokens")
    p.wait(lambda: p.text("#tokens-msg"), "the answer")
    assert p.text("#tokens-msg") == f"403 {expected.text}", p.text("#tokens-msg")
    p.tab("webhooks")  # no webhook scope either
    p.wait(lambda: p.text("#webhooks-msg"), "the answer")
    assert p.text("#webhooks-msg") == f"403 {t.api.call('GET', '/webhook', sub).text}"
    p.tab("tokens")
    p.shot("tokens-forbidden")


def webhook_row(p, name):
    rows = p.els(f"#webhooks-table tr[data-webhook='{name}']")
    return rows[0] if rows else None


def case_webhooks(t):
    """Create a mailbox and a scheduled webhook, edit one, test it, its deliveries, delete."""
    token = t.signed_in_wallet()
    p = t.page
    p.tab("webhooks")
    p.fill("#wh-id", "dash-hook")
    p.fill("#wh-url", "https://example.com/hook")
    p.choose("#wh-format", "slack")
    p.fill("#wh-headers", '{"Authorization": "Bearer s3cret"}')
    p.click("#wh-save")
    assert p.text("#webhook-form-msg") == "Saved dash-hook (PUT).", p.text("#webhook-form-msg")
    api = t.api.call("GET", "/webhook/dash-hook", token).json()
    cells = p.cells(webhook_row(p, "dash-hook"))
    assert cells[1] == api["webhook"] and cells[2] == "slack", cells
    assert api["email"] and api["email"] in cells[3], f"address {api['email']!r} not in {cells[3]!r}"
    # edit: only the format changes; the header the API shows redacted is kept
    p.press("#webhooks-table tr[data-webhook='dash-hook'] [data-action='edit']")
    p.wait(lambda: p.el("#wh-url").get_attribute("value") == "https://example.com/hook", "the form filled")
    p.choose("#wh-format", "discord")
    p.click("#wh-save")
    assert p.text("#webhook-form-msg") == "Saved dash-hook (PATCH).", p.text("#webhook-form-msg")
    api = t.api.call("GET", "/webhook/dash-hook", token).json()
    assert api["format"] == "discord" and api["headers"] == {"Authorization": "<redacted>"}, api
    assert p.cells(webhook_row(p, "dash-hook"))[2] == "discord"
    # scheduled
    p.click("#wh-new")
    p.fill("#wh-id", "dash-cron")
    p.fill("#wh-url", "https://example.com/cron")
    p.press("#wh-mode-scheduled")
    p.fill("#wh-cron", "*/5 * * * *")
    p.fill("#wh-timezone", "Europe/Rome")
    p.click("#wh-save")
    assert p.text("#webhook-form-msg") == "Saved dash-cron (PUT).", p.text("#webhook-form-msg")
    sched = t.api.call("GET", "/webhook/dash-cron", token).json()["schedule"]
    cell = p.cells(webhook_row(p, "dash-cron"))[3]
    assert "*/5 * * * *" in cell and "Europe/Rome" in cell and sched["nextRunAt"] in cell, cell
    # the API's refusal of a URL, in its words
    p.click("#wh-new")
    p.fill("#wh-id", "bad")
    p.fill("#wh-url", "http://localhost/x")
    p.click("#wh-save")
    bad = t.api.call("PUT", "/webhook/bad", token, json_body={"url": "http://localhost/x"})
    assert p.text("#webhook-form-msg") == f"{bad.status} {bad.text}", (p.text("#webhook-form-msg"), bad.text)
    # the test button: no worker runs here, so the API answers after its wait with a failure
    p.drain_network_log()
    p.click("#webhooks-table tr[data-webhook='dash-hook'] [data-action='test']", timeout=30)
    p.wait(lambda: p.els("#webhook-test-message"), "the test's answer", timeout=30)
    answer = json.loads(p.response_body("/webhook/dash-hook/test"))
    assert p.text("#webhook-test-message") == answer["message"], (p.text("#webhook-test-message"), answer)
    assert p.text("#webhook-test-success") == f"success: {json.dumps(answer['success'])}"
    p.click("#deliveries-load")
    api = t.api.call("GET", "/token/logs?type=webhook-delivery&n=10", token).json()["logs"]
    shown = log_rows(p, "#deliveries-table")
    assert api and [c for _, c in shown] == [entry_cells(e) for e in api], f"{shown} vs {api}"
    p.shot("webhooks")
    p.confirm("#webhooks-table tr[data-webhook='dash-cron'] [data-action='delete']")
    assert webhook_row(p, "dash-cron") is None, "deleted webhook still listed"
    assert t.api.call("GET", "/webhook/dash-cron", token).status == 404


def case_settings(t):
    """Settings saved through the form are what GET /token/settings gives, and are shown."""
    token = t.signed_in_wallet()
    p = t.page
    p.tab("settings")
    p.wait(lambda: p.text("#settings-threshold") != "–", "the settings")
    assert p.text("#settings-threshold") == str(t.api.call("GET", "/token/settings", token).json()["low_balance_threshold"])
    p.fill("#set-threshold", "40")
    p.fill("#set-wh-url", "https://example.com/alert")
    p.choose("#set-wh-format", "slack")
    p.fill("#set-wh-headers", '{"X-Alert": "yes"}')
    p.click("#settings-save")
    assert p.text("#settings-msg") == "OK: saved, and read back.", p.text("#settings-msg")
    api = t.api.call("GET", "/token/settings", token).json()
    assert api["low_balance_threshold"] == 40 and api["low_balance_webhook"]["url"] == "https://example.com/alert", api
    assert p.text("#settings-threshold") == "40"
    assert "https://example.com/alert" in p.text("#settings-webhook") and "slack" in p.text("#settings-webhook")
    p.shot("settings")
    # saving again would store "<redacted>" as the header: the page refuses and says why
    p.click("#settings-save")
    assert "type them again" in p.text("#settings-msg"), p.text("#settings-msg")
    p.fill("#set-wh-headers", "")
    p.fill("#set-email", "ops@example.com")
    p.click("#settings-save")
    body = {"low_balance_threshold": 40, "low_balance_webhook": {"url": "https://example.com/alert", "format": "slack"},
            "low_balance_email": "ops@example.com"}
    expected = t.api.call("PUT", "/token/settings", token, json_body=body)
    shown = p.text("#settings-msg")
    if expected.status == 200:
        assert shown == "OK: saved, and read back.", shown
    else:
        assert shown == f"{expected.status} {expected.text}", (shown, expected.text)


CASES = [case_tokens_create_and_revoke, case_non_root_token_is_forbidden, case_webhooks, case_settings]
