#!/usr/bin/env bash
# Instructions per API call in the database, counted by callgrind: `bash bench/callgrind.sh`
# (about 3 minutes). Wall-clock figures on a shared 2-core VM swing by ±20% between runs;
# instruction counts are the same on every run of the same binary, so they show what a change to
# the extension costs or saves per request, whatever else the machine is doing.
#
# Installs the extension (release), makes a throwaway cluster with one funded wallet, stops it,
# then runs a single-user backend (`postgres --single`, no client protocol in the count) under
# `valgrind --tool=callgrind`, once with LOW and once with HIGH executions of a prepared call;
# (HIGH run − LOW run) ÷ (HIGH − LOW) is the cost of one call, start-up and plan set-up cancel.
# Prints one line per call. Settings (env): CALLGRIND_LOW (200), CALLGRIND_HIGH (1200).
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "callgrind: valgrind is missing (apt-get install valgrind)" >&2
    exit 1
fi
LOW=${CALLGRIND_LOW:-200}
HIGH=${CALLGRIND_HIGH:-1200}

bench_begin callgrind
echo "callgrind: installing the extension (release)"
ev_install_extension --release >"$TMP/install.log" 2>&1 || {
    tail -n 40 "$TMP/install.log"
    exit 1
}
PORT=$(ev_free_port 55700)
EV_PG_AUTH_HOST=trust ev_cluster_start "$TMP/pg" "$PORT" echovalue 9>&- >/dev/null 2>&1
ev_db_prepare echovalue 2>/dev/null
TOKEN=$(ev_psql echovalue -tA -c "select body from echovalue.token_new(client_addr => '192.0.2.1')")
ev_psql echovalue -c "update echovalue.wallets set balance = 1000000000" \
    -c "select status from echovalue.kv_set(token => '$TOKEN', grp => 'bench', key => 'k', value => 'v')" >/dev/null
ev_cluster_stop

# The calls, as the proxy makes them (named arguments, prepared once).
declare -A CALLS=(
    [kv_get]="echovalue.kv_get(token => \$1, grp => 'bench', key => 'k')"
    [kv_set]="echovalue.kv_set(token => \$1, grp => 'bench', key => 'k', value => 'v')"
    [balance]="echovalue.wallet_get(token => \$1)"
)

# instructions NAME N: the total instructions of a single-user backend running the call N times.
instructions() {
    local out=$TMP/callgrind.$1.$2 script=$TMP/script.$1.$2 i
    {
        echo "prepare c(text) as select status from ${CALLS[$1]};"
        # each statement is its own transaction in single-user mode, as each proxy call is
        for ((i = 0; i < $2; i++)); do echo "execute c('$TOKEN');"; done
    } >"$script"
    chown postgres "$TMP" "$script" 2>/dev/null || true
    ev_as_pg valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$EV_PG_BIN/postgres" --single -D "$EV_PGDATA" -c shared_preload_libraries='' echovalue \
        <"$script" >"$TMP/single.$1.$2.log" 2>&1
    sed -n 's/^summary: \([0-9]*\).*/\1/p; s/^totals: \([0-9]*\).*/\1/p' "$out" | head -n 1
}

printf 'callgrind: instructions per call in the backend (%s - %s calls)\n' "$HIGH" "$LOW"
for name in kv_get kv_set balance; do
    low=$(instructions "$name" "$LOW")
    high=$(instructions "$name" "$HIGH")
    printf '%-8s %9d\n' "$name" $(((high - low) / (HIGH - LOW)))
done
