#!/usr/bin/env bash
# The scale-out benchmark: `bash bench/citus.sh` (about 4 minutes on 2 cores; needs Citus, see
# the README's "Scale-out on Citus").
#
# Starts one Postgres and a Citus cluster (a coordinator and two workers, tests/citus.sh's
# start), fills each with the same 256 benchmark wallets, and runs a release proxy on each
# node. bench/citus.py then drives wrk (bench/wrk/api.lua: KV get, KV set, balance, spread
# over the wallets) against the single node, against the cluster through the coordinator, and
# through both workers at once, and prints requests per second with the CPU per request of
# every node. On a 2-core machine the nodes share the cores, so the figure that counts is the
# database work per request, cluster over single node, and how it spreads over the workers.
# The proxies run with their defaults: on the cluster the extension turns group commit off
# (echovalue.group_commit()), so the single node is measured with ECHOVALUE_BATCH_MAX=1 too.
#
# Then the floor: pgbench -M prepared with one client runs, on the single node, on the worker
# that holds a wallet and through the coordinator, a statement that reads no table, one read
# and one write of the wallet's row (each one statement Citus routes to the wallet's shard),
# and the proxy's kv_get call (bench/pgbench/routed_*.sql), and prints ms per call: what one
# routed statement adds, against what a whole call costs on one Postgres.
#
# Settings (env): BENCH_SECONDS (per measurement, default 6), BENCH_CLIENTS (wrk connections,
# default 16), BENCH_OUT (also write the tables to this file), BENCH_KEEP_TMP=1,
# BENCH_FLOOR_ONLY=1 (the floor only: no proxies, no wrk).
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ ! -f "$("$EV_PG_CONFIG" --pkglibdir)/citus.so" ]; then
    echo "bench: Citus is not installed for this Postgres (bash ../shared/citus/build.sh)" >&2
    exit 1
fi
tools=("$EV_PG_BIN/pgbench")
[ "${BENCH_FLOOR_ONLY:-0}" = 1 ] || tools+=(wrk python3)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing; run bash .ci/setup first" >&2; exit 1; }
done

bench_begin citus
if [ "${BENCH_FLOOR_ONLY:-0}" = 1 ]; then
    echo "bench: installing the extension (release)"
    bench_install
else
    bench_build echovalue-proxy
fi

section() { echo "bench: $*"; }
# shellcheck source=tests/citus.sh
source "$ROOT/tests/citus.sh"
citus_cleanup() {
    local rc=$?
    [ -z "${CITUS_NODES[*]:-}" ] || citus__stop >/dev/null 2>&1
    return "$rc"
}
trap 'citus_cleanup; bench_cleanup' EXIT

# The single node, with the cluster's settings (tests/citus.sh: fsync off, 300 connections).
SINGLE_PORT=$(ev_free_port 0)
EV_PG_AUTH_HOST=trust EV_PG_FSYNC=off EV_PG_EXTRA_CONF="max_connections = 300" \
    ev_cluster_start "$TMP/single" "$SINGLE_PORT" echovalue 9>&- >/dev/null 2>&1
ev_db_prepare echovalue >/dev/null 2>&1
SINGLE=("$EV_CLUSTER_DIR" "$EV_PGDATA" "$EV_PORT" "$EV_PGLOG")
echo "bench: single node on port $SINGLE_PORT"
citus__start >"$TMP/citus-start.log" 2>&1 || { cat "$TMP/citus-start.log"; exit 1; }
# (the cluster helpers point at the single node again: it is the one bench_cleanup stops)
EV_CLUSTER_DIR=${SINGLE[0]} EV_PGDATA=${SINGLE[1]} EV_PORT=${SINGLE[2]} EV_PGLOG=${SINGLE[3]}
echo "bench: cluster: $(tail -n 1 "$TMP/citus-start.log")"

# 256 wallets with plenty of credits and a value at bench/k each, in the database of the
# cluster in $1 on port $2; their tokens in $3.
fill() {
    local dir=$1 port=$2 out=$3
    EV_CLUSTER_DIR=$dir EV_PORT=$port ev_psql echovalue -tA >"$out" <<'SQL'
set client_min_messages = warning;
set echovalue.token_rate_seconds = 0;
create temp table t as
select (echovalue.token_new(client_addr => ('10.99.' || g / 256 || '.' || g % 256)::inet)).body as token
  from generate_series(1, 256) g;
update echovalue.wallets set balance = 1000000000000;
select token from t;
SQL
    local token
    while read -r token; do
        EV_CLUSTER_DIR=$dir EV_PORT=$port ev_psql echovalue -tA -v t="$token" \
            <<<"select status from echovalue.kv_set(token => :'t', grp => 'bench', key => 'k', value => 'v', wallet => echovalue.token_wallet(:'t'))" >/dev/null
    done <"$out"
}
read -r COORD_DIR COORD_PORT <<<"${CITUS_NODES[0]}"
read -r W1_DIR W1_PORT <<<"${CITUS_NODES[1]}"
read -r W2_DIR W2_PORT <<<"${CITUS_NODES[2]}"
fill "${SINGLE[0]}" "$SINGLE_PORT" "$TMP/tokens-single.txt"
fill "$COORD_DIR" "$COORD_PORT" "$TMP/tokens-cluster.txt"
echo "bench: 256 wallets in each"

# A release proxy on database port $1, with the environment assignments after it; prints its
# "pid port" (it runs in a subshell: the caller adds the pid to BENCH_PIDS, for bench_cleanup).
proxy() {
    local db_port=$1 port
    shift
    port=$(ev_free_port 0)
    env "$@" ECHOVALUE_LISTEN="127.0.0.1:$port" ECHOVALUE_LOG=warn \
        ECHOVALUE_DATABASE_URL="postgresql://echovalue_proxy@127.0.0.1:$db_port/echovalue" \
        "$TARGET_DIR/release/echovalue-proxy" >"$TMP/proxy-$db_port-$port.log" 2>&1 9>&- &
    bench_wait_port "127.0.0.1:$port" proxy "$TMP/proxy-$db_port-$port.log" >&2
    echo "$! $port"
}
postmaster() { head -n 1 "$1/data/postmaster.pid"; }

if [ "${BENCH_FLOOR_ONLY:-0}" != 1 ]; then
    # (the proxies' defaults; on the cluster the extension turns group commit off by itself)
    read -r P_SINGLE PORT_SINGLE < <(proxy "$SINGLE_PORT")
    BENCH_PIDS+=("$P_SINGLE")
    read -r P_SINGLE1 PORT_SINGLE1 < <(proxy "$SINGLE_PORT" ECHOVALUE_BATCH_MAX=1)
    BENCH_PIDS+=("$P_SINGLE1")
    read -r P_COORD PORT_COORD < <(proxy "$COORD_PORT")
    BENCH_PIDS+=("$P_COORD")
    read -r P_W1 PORT_W1 < <(proxy "$W1_PORT")
    BENCH_PIDS+=("$P_W1")
    read -r P_W2 PORT_W2 < <(proxy "$W2_PORT")
    BENCH_PIDS+=("$P_W2")

    python3 "$ROOT/bench/citus.py" \
        --seconds "${BENCH_SECONDS:-6}" --clients "${BENCH_CLIENTS:-16}" \
        --single "$(postmaster "${SINGLE[0]}")" "$P_SINGLE" "$PORT_SINGLE" "$TMP/tokens-single.txt" \
        --single-unbatched "$P_SINGLE1" "$PORT_SINGLE1" \
        --nodes "$(postmaster "$COORD_DIR")" "$(postmaster "$W1_DIR")" "$(postmaster "$W2_DIR")" \
        --tokens "$TMP/tokens-cluster.txt" \
        --coordinator "$P_COORD" "$PORT_COORD" \
        --workers "$P_W1" "$PORT_W1" "$P_W2" "$PORT_W2" \
        | tee "${BENCH_OUT:-/dev/null}"
fi

# The floor. A cluster wallet whose shard is on worker 1; ms per call of script $1 with token
# $2 on port $3 (one client, so the latency is the work of a call plus the round trip).
W1_TOKEN=
while read -r token; do
    node=$(EV_CLUSTER_DIR=$COORD_DIR EV_PORT=$COORD_PORT ev_psql echovalue -tA -v t="$token" \
        <<<"select n.nodeport from pg_catalog.pg_dist_placement p join pg_catalog.pg_dist_node n on n.groupid = p.groupid where p.shardid = get_shard_id_for_distribution_column('echovalue.wallets', echovalue.token_wallet(:'t'))")
    if [ "$node" = "$W1_PORT" ]; then W1_TOKEN=$token; break; fi
done <"$TMP/tokens-cluster.txt"
[ -n "$W1_TOKEN" ] || { echo "bench: no benchmark wallet on worker 1" >&2; exit 1; }
SINGLE_TOKEN=$(head -n 1 "$TMP/tokens-single.txt")
per_call() {
    local log=$TMP/pgbench-$1-$3.log
    "$EV_PG_BIN/pgbench" -n -M prepared -c 1 -T "${BENCH_SECONDS:-6}" -h 127.0.0.1 -p "$3" \
        -U "$EV_PG_SUPERUSER" -D token="$2" -f "$ROOT/bench/pgbench/routed_$1.sql" echovalue \
        >"$log" 2>&1 || true
    if ! awk '/^latency average/ { print $4; found = 1 } END { exit !found }' "$log"; then
        echo "bench: pgbench of $1 on port $3 gave no latency; its output:" >&2
        cat "$log" >&2
        echo failed
    fi
}
{
    echo
    echo "| statement | 1 node | the wallet's worker | via coordinator | worker - 1 node |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for script in round_trip read write kv_get; do
        one=$(per_call "$script" "$SINGLE_TOKEN" "$SINGLE_PORT")
        worker=$(per_call "$script" "$W1_TOKEN" "$W1_PORT")
        coord=$(per_call "$script" "$W1_TOKEN" "$COORD_PORT")
        awk -v s="$script" -v a="$one" -v b="$worker" -v c="$coord" 'BEGIN {
            d = (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) ? sprintf("%+.3f", b - a) : "failed"
            printf "| %s | %s | %s | %s | %s |\n", s, a, b, c, d }'
    done
    echo "(ms per call, pgbench -M prepared, one client, ${BENCH_SECONDS:-6} s each)"
} | tee -a "${BENCH_OUT:-/dev/null}"
