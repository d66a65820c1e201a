#!/usr/bin/env bash
# The Mail2Webhook benchmark (not a test): a throwaway cluster, the release mailhook with
# loopback delivery allowed, and bench/mail.py sending N messages over C SMTP connections to a
# local receiver; prints messages per second and the DATA-to-webhook latency p50/p99.
#   bash .ci/setup && bash bench/mail.sh          # N=2000 C=8 by default
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_begin mailbench
bench_build echovalue-mailhook

PORT=$(ev_free_port 55610)
EV_PG_AUTH_HOST=trust ev_cluster_start "$TMP/pg" "$PORT" echovalue 9>&- >/dev/null 2>&1
ev_db_prepare echovalue 2>/dev/null
# loopback delivery to the local receiver: the one switch, for this throwaway database
ev_psql echovalue -c 'alter database echovalue set echovalue.webhook_allow_insecure = on'
SMTP_PORT=$(ev_free_port 0)
ECHOVALUE_DATABASE_URL="postgresql://echovalue_mailhook@127.0.0.1:$PORT/echovalue" \
    ECHOVALUE_SMTP_LISTEN="127.0.0.1:$SMTP_PORT" \
    ECHOVALUE_LOG=warn "$TARGET_DIR/release/echovalue-mailhook" 9>&- 2>"$TMP/mailhook.log" &
BENCH_PIDS+=($!)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break
    sleep 0.1
done

ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/echovalue" SMTP_PORT=$SMTP_PORT \
    python3 "$ROOT/bench/mail.py"
