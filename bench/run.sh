#!/usr/bin/env bash
# The benchmark command: `bash bench/run.sh` (about 6 minutes on 2 cores).
#
# Builds release binaries, installs the extension (release) into the system Postgres 15, starts
# a throwaway cluster and the proxy on loopback, fills them with benchmark wallets, then runs
# bench/bench.py, which drives wrk (bench/wrk/api.lua) and pgbench (bench/pgbench/*.sql and the
# built-in -N) and prints the results table. Row 5 is Redis behind webdis beside them
# (bench/webdis.sh: installs redis-server and webdis if missing and root or sudo, else skips
# the row). Everything is stopped and removed at the end.
#
# Settings (env): BENCH_SECONDS (per measurement, default 8), BENCH_OUT (also write the table
# to this file), BENCH_POOL (proxy database connections, default 16: the proxy's own default),
# BENCH_WEBDIS=0 (no row 5), BENCH_KEEP_TMP=1.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=bench/webdis.sh
source "$ROOT/bench/webdis.sh"

for tool in wrk "$EV_PG_BIN/pgbench" python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench: $tool is missing; run bash .ci/setup first" >&2
        exit 1
    fi
done

bench_begin bench
bench_build echovalue-proxy

PORT=$(ev_free_port 55600)
# The cluster's defaults are durable (fsync, synchronous_commit on); 9>&-: see tests/run.sh.
EV_PG_AUTH_HOST=trust ev_cluster_start "$TMP/pg" "$PORT" echovalue 9>&- >/dev/null 2>&1
# No checkpoint during the run (it starts with one): the default 5-minute one would land in
# whichever cell runs then and flood it with full-page images. Recovery time, not durability.
ev_psql postgres -c "alter system set max_connections = 200" -c "alter system set shared_buffers = '256MB'" \
    -c "alter system set checkpoint_timeout = '30min'" -c "alter system set max_wal_size = '8GB'"
ev_as_pg "$EV_PG_BIN/pg_ctl" -D "$EV_PGDATA" -m fast -w restart -l "$EV_PGLOG" >/dev/null 9>&-
ev_db_prepare echovalue 2>/dev/null
ev_psql postgres -c 'create database pgb'

# 256 wallets with plenty of credits and a value at bench/k each; the first is the hot one.
ev_psql echovalue <<'SQL'
set echovalue.token_rate_seconds = 0;
create schema bench;
create table bench.tokens (n int primary key, token text not null);
insert into bench.tokens
select g - 1, (echovalue.token_new(client_addr => ('10.99.' || g / 256 || '.' || g % 256)::inet)).body
  from generate_series(1, 256) g;
update echovalue.wallets set balance = 1000000000000;
select count(*) from bench.tokens t, echovalue.kv_set(token => t.token, grp => 'bench', key => 'k', value => 'v') o
 where o.status = 200;
grant usage on schema bench to echovalue_proxy;
grant select on bench.tokens to echovalue_proxy;
SQL
ev_psql echovalue -tA -c 'select token from bench.tokens order by n' >"$TMP/tokens-many.txt"
head -n 1 "$TMP/tokens-many.txt" >"$TMP/tokens-hot.txt"
"$EV_PG_BIN/pgbench" -i -q -s 16 -h "$EV_CLUSTER_DIR" -p "$PORT" -U postgres pgb >"$TMP/pgbench-init.log" 2>&1
ev_psql echovalue -c 'vacuum analyze' -c 'checkpoint'
ev_psql pgb -c 'vacuum analyze' -c 'checkpoint'

# start_proxy LISTEN LOG [BATCH_MAX]: a release proxy in the background; its pid in BENCH_PIDS
start_proxy() {
    ECHOVALUE_LISTEN=$1 ECHOVALUE_LOG=warn ECHOVALUE_POOL_SIZE=${BENCH_POOL:-16} \
        ECHOVALUE_BATCH_MAX=${3:-64} \
        ECHOVALUE_DATABASE_URL="host=$EV_CLUSTER_DIR port=$PORT user=echovalue_proxy dbname=echovalue" \
        "$TARGET_DIR/release/echovalue-proxy" >"$2" 2>&1 9>&- &
    BENCH_PIDS+=($!)
    bench_wait_port "$1" "the proxy" "$2"
}
LISTEN="127.0.0.1:$(ev_free_port 0)"
start_proxy "$LISTEN" "$TMP/proxy.log"
PROXY_PID=${BENCH_PIDS[0]}
# The same proxy with batching off (ECHOVALUE_BATCH_MAX=1), for the hot-token row:
# what one token gets when every call is its own transaction.
LISTEN_NOBATCH="127.0.0.1:$(ev_free_port 0)"
start_proxy "$LISTEN_NOBATCH" "$TMP/proxy-nobatch.log" 1
# Row 5: a private Redis (durable SET) behind webdis; WEBDIS_ARGS stays empty if they are missing.
webdis_start "$TMP/webdis"

python3 bench/bench.py \
    --url "http://$LISTEN" --url-nobatch "http://$LISTEN_NOBATCH" --proxy-pid "$PROXY_PID" \
    --pg-pid "$(head -n 1 "$EV_PGDATA/postmaster.pid")" \
    --pg-host "$EV_CLUSTER_DIR" --pg-port "$PORT" --pgbench "$EV_PG_BIN/pgbench" \
    --tokens-many "$TMP/tokens-many.txt" --tokens-hot "$TMP/tokens-hot.txt" \
    --seconds "${BENCH_SECONDS:-8}" --work "$TMP" ${BENCH_OUT:+--out "$BENCH_OUT"} "${WEBDIS_ARGS[@]}"
