#!/usr/bin/env bash
# The Mail2Webhook benchmark (not a test): a throwaway cluster, the release mailhook with
# loopback delivery allowed, and bench/mail.py sending N messages over C SMTP connections to a
# local receiver; prints messages per second and the DATA-to-webhook latency p50/p99.
#   bash .ci/setup && bash bench/mail.sh          # N=2000 C=8 by default
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
source "$ROOT/tests/cluster.sh"

exec 9>/tmp/echovalue-install.lock
if ! flock -n 9; then
    echo "bench: waiting for /tmp/echovalue-install.lock (a test run is using the extension)" >&2
    flock 9
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d /tmp/echovalue-mailbench.XXXXXX)
chmod 0755 "$TMP"
HOOK_PID=

cleanup() {
    local rc=$?
    if [ -n "$HOOK_PID" ]; then
        kill -TERM "$HOOK_PID" 2>/dev/null || true
        wait "$HOOK_PID" 2>/dev/null || true
    fi
    ev_cluster_stop
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "bench: files kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: building (release)"
ev_install_extension --release >"$TMP/install.log" 2>&1 || {
    tail -n 40 "$TMP/install.log"
    exit 1
}
cargo build --release -q -p echovalue-mailhook

PORT=$(ev_free_port 55610)
EV_PG_AUTH_HOST=trust ev_cluster_start "$TMP/pg" "$PORT" echovalue 9>&- >/dev/null 2>&1
ev_db_prepare echovalue 2>/dev/null
SMTP_PORT=$(ev_free_port 0)
ECHOVALUE_DATABASE_URL="postgresql://echovalue_mailhook@127.0.0.1:$PORT/echovalue" \
    ECHOVALUE_SMTP_LISTEN="127.0.0.1:$SMTP_PORT" ECHOVALUE_DELIVERY_ALLOW_INSECURE=true \
    ECHOVALUE_LOG=warn "$TARGET_DIR/release/echovalue-mailhook" 9>&- 2>"$TMP/mailhook.log" &
HOOK_PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break
    sleep 0.1
done

ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/echovalue" SMTP_PORT=$SMTP_PORT \
    python3 "$ROOT/bench/mail.py"
