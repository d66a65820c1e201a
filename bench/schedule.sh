#!/usr/bin/env bash
# The scheduled-webhook benchmark (not a test): a throwaway cluster with 100,000 active
# schedules over 10,000 wallets, then bench/schedule.py measures what planning costs when
# nothing is due (at 1,000 and at 100,000 schedules), the database time to plan one run, and,
# with the release mailhook delivering to a local receiver, the time from a minute in which
# 10,000 runs are due to the last webhook received.
#   bash .ci/setup && bash bench/schedule.sh          # about 2 minutes on 2 cores
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_begin schedbench
bench_build echovalue-mailhook

PORT=$(ev_free_port 55620)
EV_PG_AUTH_HOST=trust ev_cluster_start "$TMP/pg" "$PORT" echovalue 9>&- >/dev/null 2>&1
ev_psql postgres -c "alter system set max_connections = 200" -c "alter system set shared_buffers = '256MB'"
ev_as_pg "$EV_PG_BIN/pg_ctl" -D "$EV_PGDATA" -m fast -w restart -l "$EV_PGLOG" >/dev/null 9>&-
ev_db_prepare echovalue 2>/dev/null
# loopback delivery to the local receiver: the one switch, for this throwaway database
ev_psql echovalue -c 'alter database echovalue set echovalue.webhook_allow_insecure = on'

ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/echovalue" \
    MAILHOOK_URL="postgresql://echovalue_mailhook@127.0.0.1:$PORT/echovalue" \
    MAILHOOK_BIN="$TARGET_DIR/release/echovalue-mailhook" MAILHOOK_LOG="$TMP/mailhook.log" \
    python3 "$ROOT/bench/schedule.py"
