#!/usr/bin/env bash
# The test command: `bash tests/run.sh` (CI runs it through .ci/run).
#
# Installs the extension (dev profile) into the system Postgres 15, starts a throwaway cluster
# in a temp dir (own socket dir and port; the machine's default cluster is never touched), then
# runs, continuing past failures so one run shows everything:
#   1. the SQL suites: pg_regress over tests/regress/sql/*.sql (setup first, then by name),
#      and the upgrade path from every earlier version kept in tests/upgrade/
#   2. cargo test --workspace --no-fail-fast, with ECHOVALUE_TEST_ADMIN_URL / _PROXY_URL / _MAILHOOK_URL and
#      ECHOVALUE_TEST_MAILHOOK_BIN (the built worker binary; the SMTP tests run it with swaks
#      and Python smtplib)
#   3. against a real proxy on loopback: the seed snippets (tests/seeds/run_snippets.py),
#      schemathesis with the proxy's /openapi.json (tests/openapi/run.sh), and the dashboard
#      in chromium driven by Selenium (tests/dashboard/test_dashboard.py; screenshots of each
#      view in EV_SCREENSHOT_DIR, default the temp dir's screenshots/, kept with EV_KEEP_TMP=1)
#   4. the scale-out suite on a Citus coordinator and two workers (tests/citus.sh; skipped,
#      and said so, without Citus)
# The cluster and the proxy are always stopped. Exit status is non-zero if anything failed.
#
# Settings: EV_TEST_PORT (default 55439, or a free one), EV_KEEP_TMP=1 keeps the temp dir,
# EV_PARTS runs only some parts (sql, upgrade, backup, cargo, seeds, openapi, dashboard, citus;
# all by default), and
# EV_CARGO_TEST_ARGS picks cargo tests (e.g. "--test alerts").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/cluster.sh
source "$ROOT/tests/cluster.sh"

ev_take_install_lock run.sh

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/echovalue-test.XXXXXX)
chmod 0755 "$TMP"
PROXY_PID=
failed_parts=()
total_passed=0
total_failed=0

cleanup() {
    local rc=$?
    if [ -n "$PROXY_PID" ] && kill -0 "$PROXY_PID" 2>/dev/null; then
        kill -TERM "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
    if [ -n "${CITUS_NODES[*]:-}" ]; then citus__stop; fi
    ev_cluster_stop
    if [ "${EV_KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "run.sh: logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n==== %s ====\n' "$*"; }

# --- cluster ---------------------------------------------------------------------------------
section "install extension (dev profile)"
ev_install_extension --dev

section "start throwaway cluster"
PORT=$(ev_free_port "${EV_TEST_PORT:-55439}")
# A throwaway cluster on loopback: trust is enough and keeps the test URLs password-free.
# 9>&-: the server must not inherit the lock, or it would hold it after this run if left behind.
EV_PG_AUTH_HOST=trust ev_cluster_start "$TMP/pg" "$PORT" echovalue 9>&-
ev_db_prepare echovalue
ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/echovalue"
PROXY_URL="postgresql://echovalue_proxy@127.0.0.1:$PORT/echovalue"
MAILHOOK_URL="postgresql://echovalue_mailhook@127.0.0.1:$PORT/echovalue"

# --- 1. SQL suites ---------------------------------------------------------------------------
run_regress() {
    section "SQL suites (pg_regress)"
    local tests=() name
    if [ -f tests/regress/sql/setup.sql ]; then
        tests+=(setup)
    fi
    for f in tests/regress/sql/*.sql; do
        [ -e "$f" ] || continue
        name=$(basename "$f" .sql)
        [ "$name" = setup ] || tests+=("$name")
    done
    if [ "${#tests[@]}" -eq 0 ]; then
        echo "no SQL suites in tests/regress/sql"
        echo "sql: 0 passed, 0 failed"
        return 0
    fi
    PGOPTIONS='-c client_min_messages=warning' ev_psql postgres -c 'drop database if exists ev_regress' -c 'create database ev_regress'
    local out=$TMP/regress
    mkdir -p "$out"
    local rc=0
    "$("$EV_PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --use-existing --host="$EV_CLUSTER_DIR" --port="$PORT" --user=postgres \
        --dbname=ev_regress --inputdir=tests/regress --outputdir="$out" \
        --bindir="$EV_PG_BIN" "${tests[@]}" 2>&1 | tee "$out/pg_regress.log" || rc=$?
    # pg_regress prints one line per test ("test NAME ... ok|FAILED"; "ok N - NAME" in later
    # versions); count by test name so a crash that prints nothing still counts as a failure.
    local passed=0 failed=0
    for name in "${tests[@]}"; do
        if grep -Eq "(^|[[:space:]])${name}[[:space:]]+\.\.\. ok|^ok [0-9]+[[:space:]]+-[[:space:]]+${name}([[:space:]]|$)" "$out/pg_regress.log"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
    if [ -s "$out/regression.diffs" ]; then
        echo "--- regression.diffs ---"
        cat "$out/regression.diffs"
    fi
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
    fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    echo "sql: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# --- 1b. the upgrade path --------------------------------------------------------------------
# Each earlier version whose install script is kept in tests/upgrade/ is created, given a wallet and
# updated with ALTER EXTENSION; its catalog must then equal a fresh install's
# (tests/upgrade/catalog.sql), and the old wallet must still work: its root token as before,
# and a token made before scopes (where the version has tokens) with the default scopes, so
# no longer the webhook (SPEC section 15).
run_upgrade() {
    section "extension upgrade"
    local base version passed=0 failed=0 token sub rights expect email
    ev_psql postgres -c 'drop database if exists ev_up_fresh' -c 'create database ev_up_fresh'
    ev_psql ev_up_fresh -c 'create extension echovalue'
    ev_psql ev_up_fresh -f tests/upgrade/catalog.sql >"$TMP/upgrade-fresh.txt"
    for base in tests/upgrade/echovalue--*.sql; do
        [ -e "$base" ] || continue
        version=${base#tests/upgrade/echovalue--}
        version=${version%.sql}
        ev_install_old_version "$base"
        ev_psql postgres -c 'drop database if exists ev_up_old' -c 'create database ev_up_old'
        ev_psql ev_up_old -c "create extension echovalue version '$version'"
        token=$(ev_psql ev_up_old -tA -c "select body from echovalue.token_new(client_addr => '192.0.2.1')")
        sub=$token
        if grep -q 'function echovalue.token_key_create' "$base"; then
            sub=$(ev_psql ev_up_old -tA -v token="$token" <<<"select body::json ->> 'token' from echovalue.token_key_create(token => :'token', spec => '{\"label\":\"old\"}')")
        fi
        # a webhook's address made before the update (where the version has webhooks)
        email=""
        if grep -q 'function echovalue.webhook_set' "$base"; then
            email=$(ev_psql ev_up_old -tA -v token="$token" <<<"select status from echovalue.webhook_set(token => :'token', body => '{\"url\":\"https://example.com/hook\"}') \\g /dev/null
select body::json ->> 'email' from echovalue.webhook_get(token => :'token')")
        fi
        ev_psql ev_up_old -c 'alter extension echovalue update'
        ev_psql ev_up_old -f tests/upgrade/catalog.sql >"$TMP/upgrade-$version.txt"
        # kv_set and webhook_get of the root token, then of the older token
        rights=$(ev_psql ev_up_old -tA -v token="$token" -v sub="$sub" <<<"select string_agg(s::text, ' ' order by n) from (values
            (1, (echovalue.kv_set(token => :'token', grp => 'g', key => 'k', value => 'v')).status),
            (2, (echovalue.webhook_get(token => :'token')).status),
            (3, (echovalue.kv_set(token => :'sub', grp => 'g', key => 'k', value => 'v')).status),
            (4, (echovalue.webhook_get(token => :'sub')).status)) v(n, s)")
        expect="200 200 200 403"
        [ "$sub" = "$token" ] && expect="200 200 200 200" # a version without tokens: the root twice
        # that address still takes mail (a mailbox made before 0.11.0 has no wallet key)
        if [ -n "$email" ]; then
            rights="$rights $(ev_psql ev_up_old -tA -v email="$email" <<<"select code from echovalue.mail_rcpt_check(recipient => :'email')")"
            expect="$expect 250"
        fi
        if diff -u "$TMP/upgrade-fresh.txt" "$TMP/upgrade-$version.txt" && [ "$rights" = "$expect" ]; then
            echo "upgrade from $version ... ok"
            passed=$((passed + 1))
        else
            echo "upgrade from $version ... FAILED (the catalog differs from a fresh install, or the old wallet's tokens have other rights: $rights)"
            failed=$((failed + 1))
        fi
    done
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    echo "upgrade: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# --- 1c. backup and restore (tests/backup.sh) ------------------------------------------------
# shellcheck source=tests/backup.sh
source "$ROOT/tests/backup.sh"

# --- 2. cargo tests --------------------------------------------------------------------------
# Adds the counts of cargo's "test result:" lines in log $1 to the totals and prints them as
# "$3: N passed, N failed"; $2 is cargo's exit code (a failure with no failed test, such as a
# build failure, counts as one failure).
count_cargo() {
    local log=$1 rc=$2 label=$3 p f
    read -r p f < <(awk '/^test result: /{
        for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i }
    } END { print p + 0, f + 0 }' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    [ -z "$label" ] || echo "$label: $p passed, $f failed"
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
}

run_cargo_tests() {
    section "cargo test --workspace"
    local rc=0
    # The worker-crash test runs the real mailhook binary (cargo test builds only test harnesses
    # of other packages' binaries); a build failure shows up as a failing test run below.
    cargo build -p echovalue-mailhook 2>&1 | tail -n 3 || true
    ECHOVALUE_TEST_ADMIN_URL=$ADMIN_URL ECHOVALUE_TEST_PROXY_URL=$PROXY_URL \
        ECHOVALUE_TEST_MAILHOOK_URL=$MAILHOOK_URL \
        ECHOVALUE_TEST_MAILHOOK_BIN=$TARGET_DIR/debug/echovalue-mailhook \
        PGRX_PG_CONFIG_PATH=$EV_PG_CONFIG \
        cargo test --workspace --no-fail-fast ${EV_CARGO_TEST_ARGS:-} 2>&1 | tee "$TMP/cargo-test.log" || rc=$?
    # (cargo prints its own lines; the total has them)
    count_cargo "$TMP/cargo-test.log" "$rc" ""
    [ "$rc" -eq 0 ]
}

# --- 3. suites against a real proxy on loopback -----------------------------------------------
# Builds the debug proxy and starts it on a free port against database $1 (made ready first),
# with the environment assignments that follow; sets PROXY_PORT. Fails with the proxy's log.
start_proxy() {
    local db=$1
    shift
    # (EV_NO_PREPARE=1: a Citus worker, where the coordinator made everything)
    [ "${EV_NO_PREPARE:-0}" = 1 ] || ev_db_prepare "$db"
    if ! cargo build -p echovalue-proxy >"$TMP/proxy-build.log" 2>&1; then
        cat "$TMP/proxy-build.log"
        echo "the proxy does not build"
        return 1
    fi
    PROXY_PORT=$(ev_free_port 0)
    env "$@" ECHOVALUE_LISTEN="127.0.0.1:$PROXY_PORT" \
        ECHOVALUE_DATABASE_URL="postgresql://echovalue_proxy@127.0.0.1:$PORT/$db" \
        "$TARGET_DIR/debug/echovalue-proxy" >"$TMP/proxy-$db.log" 2>&1 9>&- &
    PROXY_PID=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; then return 0; fi
        if ! kill -0 "$PROXY_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "the proxy did not start; its log:"
    cat "$TMP/proxy-$db.log"
    return 1
}

# Stops the proxy start_proxy started; with a non-zero $1 (the suite's status), prints the end
# of its log (database $2).
stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
    if [ "$1" -ne 0 ]; then
        echo "--- proxy log (end) ---"
        tail -n 40 "$TMP/proxy-$2.log"
    fi
}

# Adds the last "NAME: N passed, N failed" line of log $2 to the totals; a suite that failed
# ($3, its exit status) without a count counts as one failure.
count_suite() {
    local p f
    p=$(sed -nE "s/^$1: ([0-9]+) passed, ([0-9]+) failed.*/\1/p" "$2" | tail -n 1)
    f=$(sed -nE "s/^$1: ([0-9]+) passed, ([0-9]+) failed.*/\2/p" "$2" | tail -n 1)
    p=${p:-0} f=${f:-0}
    if [ "$3" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
}

# A suite that could not start counts as one failure.
suite_broken() {
    total_failed=$((total_failed + 1))
    return 1
}

# 3a. the seed snippets (Python requests, JavaScript fetch)
run_seeds() {
    section "seed snippets (Python requests, JavaScript fetch)"
    local seeds_dir=${EV_SEEDS_DIR:-$ROOT/../shared/seeds}
    if ! compgen -G "$seeds_dir/002_*.txt" >/dev/null; then
        echo "seed 002 not found in $seeds_dir"
        suite_broken
        return
    fi
    # The seed snippets create tokens back to back; the 10 s per-address token rate limit is
    # tested elsewhere, so this database alone turns it off.
    ev_db_prepare echovalue_seeds
    ev_psql echovalue_seeds -c 'alter database echovalue_seeds set echovalue.token_rate_seconds = 0'
    start_proxy echovalue_seeds || { suite_broken; return; }
    local rc=0
    python3 tests/seeds/run_snippets.py --base-url "http://127.0.0.1:$PROXY_PORT" --seeds-dir "$seeds_dir" \
        2>&1 | tee "$TMP/seeds.log" || rc=$?
    count_suite seeds "$TMP/seeds.log" "$rc"
    stop_proxy "$rc" echovalue_seeds
    return "$rc"
}

# 3b. schemathesis against the proxy with its own /openapi.json (tests/openapi/run.sh)
run_openapi() {
    section "OpenAPI conformance (schemathesis)"
    ev_db_prepare echovalue_openapi
    ev_psql echovalue_openapi -c 'alter database echovalue_openapi set echovalue.token_rate_seconds = 0'
    # A Stripe secret, so the webhook receiver answers (400 for a bad signature, not 503);
    # webhook tests without a worker end after a second.
    start_proxy echovalue_openapi ECHOVALUE_STRIPE_WEBHOOK_SECRET=whsec_openapi_conformance \
        ECHOVALUE_WEBHOOK_TEST_WAIT_SECS=1 || { suite_broken; return; }
    local rc=0
    EV_ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/echovalue_openapi" \
        bash tests/openapi/run.sh "http://127.0.0.1:$PROXY_PORT" 2>&1 | tee "$TMP/openapi.log" || rc=$?
    count_suite openapi "$TMP/openapi.log" "$rc"
    stop_proxy "$rc" echovalue_openapi
    return "$rc"
}

# 3c. the dashboard in a real browser (tests/dashboard/test_dashboard.py: Selenium, chromium)
run_dashboard() {
    section "dashboard (Selenium, chromium)"
    ev_db_prepare echovalue_dashboard
    ev_psql echovalue_dashboard -c 'alter database echovalue_dashboard set echovalue.token_rate_seconds = 0'
    # no worker runs here: a webhook test ends with "no worker took the test" after a second
    start_proxy echovalue_dashboard ECHOVALUE_WEBHOOK_TEST_WAIT_SECS=1 || { suite_broken; return; }
    local rc=0
    EV_ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/echovalue_dashboard" \
        EV_SCREENSHOT_DIR=${EV_SCREENSHOT_DIR:-$TMP/screenshots} \
        python3 tests/dashboard/test_dashboard.py --base-url "http://127.0.0.1:$PROXY_PORT" \
        2>&1 | tee "$TMP/dashboard.log" || rc=$?
    count_suite dashboard "$TMP/dashboard.log" "$rc"
    stop_proxy "$rc" echovalue_dashboard
    return "$rc"
}

# 4. scale-out on Citus (tests/citus.sh)
# shellcheck source=tests/citus.sh
source "$ROOT/tests/citus.sh"

# EV_PARTS picks parts while developing (e.g. EV_PARTS="sql upgrade"); CI runs them all.
parts=" ${EV_PARTS:-sql upgrade backup cargo seeds openapi dashboard citus} "
[[ $parts == *" sql "* ]] && { run_regress || failed_parts+=(sql); }
[[ $parts == *" upgrade "* ]] && { run_upgrade || failed_parts+=(upgrade); }
[[ $parts == *" backup "* ]] && { run_backup || failed_parts+=(backup); }
[[ $parts == *" cargo "* ]] && { run_cargo_tests || failed_parts+=(cargo); }
[[ $parts == *" seeds "* ]] && { run_seeds || failed_parts+=(seeds); }
[[ $parts == *" openapi "* ]] && { run_openapi || failed_parts+=(openapi); }
[[ $parts == *" dashboard "* ]] && { run_dashboard || failed_parts+=(dashboard); }
[[ $parts == *" citus "* ]] && { run_citus || failed_parts+=(citus); }

section "summary"
if [ "${#failed_parts[@]}" -gt 0 ]; then
    echo "failed parts: ${failed_parts[*]}"
    echo "--- postgres log (end) ---"
    tail -n 40 "$EV_PGLOG" || true
fi
summary="total: $total_passed passed, $total_failed failed"
echo "$summary"
if [ -n "${EV_SUMMARY_FILE:-}" ]; then
    echo "$summary" >"$EV_SUMMARY_FILE"
fi
[ "${#failed_parts[@]}" -eq 0 ]
