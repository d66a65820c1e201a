# shellcheck shell=bash
# The scale-out suite (SPEC section 18, issue 14), sourced by tests/run.sh (part `citus`): a
# Citus coordinator and two workers, each a private cluster on its own loopback port, with
# the extension installed on the coordinator (Citus creates it on the workers) and
# echovalue.distribute() run. Suites then run against a proxy connected to the coordinator.
# Skipped, and said so, where Citus is not installed for this Postgres.
#
# EV_CITUS_SUITES picks suites (default: seeds cargo).

CITUS_NODES=()   # "dir port" of the coordinator, then the workers

# Points the cluster helpers (ev_psql, start_proxy) at node $1 (0 = the coordinator).
citus__use() {
    local dir port
    read -r dir port <<<"${CITUS_NODES[$1]}"
    EV_CLUSTER_DIR=$dir EV_PGDATA=$dir/data EV_PORT=$port EV_PGLOG=$dir/postgres.log PORT=$port
}

citus__start() {
    local n port
    for n in 0 1 2; do
        port=$(ev_free_port 0)
        EV_PG_PRELOAD='citus,echovalue' EV_PG_AUTH_HOST=trust EV_PG_FSYNC=off \
            EV_PG_EXTRA_CONF="max_connections = 300" \
            ev_cluster_start "$TMP/citus/n$n" "$port" echovalue 9>&- || return 1
        CITUS_NODES+=("$EV_CLUSTER_DIR $port")
        ev_psql postgres -c 'create database echovalue'
        ev_psql echovalue -c 'set client_min_messages = warning' -c 'create extension citus'
    done
    citus__use 0
    local w1 w2
    w1=$(cut -d' ' -f2 <<<"${CITUS_NODES[1]}")
    w2=$(cut -d' ' -f2 <<<"${CITUS_NODES[2]}")
    ev_psql echovalue -tA -c "select citus_set_coordinator_host('127.0.0.1', $PORT)" \
        -c "select citus_add_node('127.0.0.1', $w1)" -c "select citus_add_node('127.0.0.1', $w2)" >/dev/null
    ev_db_prepare echovalue
    ev_psql echovalue -tA -c 'select echovalue.distribute()'
}

citus__stop() {
    local n
    for n in "${!CITUS_NODES[@]}"; do
        citus__use "$n"
        ev_cluster_stop
    done
    CITUS_NODES=()
}

run_citus() {
    section "scale-out on Citus (a coordinator and two workers)"
    if [ ! -f "$("$EV_PG_CONFIG" --pkglibdir)/citus.so" ]; then
        echo "citus: skipped: Citus is not installed for this Postgres (bash ../shared/citus/build.sh builds it; the README says how to install it from Citus's packages)"
        echo "citus: 0 passed, 0 failed"
        return 0
    fi
    # the main cluster's settings, given back at the end
    local saved=("$EV_CLUSTER_DIR" "$EV_PGDATA" "$EV_PORT" "$EV_PGLOG" "$PORT")
    local rc=0 suites=" ${EV_CITUS_SUITES:-seeds cargo} "
    if ! citus__start >"$TMP/citus-start.log" 2>&1; then
        cat "$TMP/citus-start.log"
        citus__stop
        EV_CLUSTER_DIR=${saved[0]} EV_PGDATA=${saved[1]} EV_PORT=${saved[2]} EV_PGLOG=${saved[3]} PORT=${saved[4]}
        suite_broken
        return
    fi
    cat "$TMP/citus-start.log"
    local admin="postgresql://postgres@127.0.0.1:$PORT/echovalue"
    if [[ $suites == *" seeds "* ]]; then
        ev_psql echovalue -c 'alter database echovalue set echovalue.token_rate_seconds = 0'
        if start_proxy echovalue; then
            local s=0
            python3 tests/seeds/run_snippets.py --base-url "http://127.0.0.1:$PROXY_PORT" \
                --seeds-dir "${EV_SEEDS_DIR:-$ROOT/../shared/seeds}" 2>&1 \
                | sed 's/^seeds:/citus seeds:/' | tee "$TMP/citus-seeds.log" || s=$?
            count_suite "citus seeds" "$TMP/citus-seeds.log" "$s"
            stop_proxy "$s" echovalue
            [ "$s" -eq 0 ] || rc=1
        else
            suite_broken || rc=1
        fi
        ev_psql echovalue -c 'alter database echovalue reset echovalue.token_rate_seconds'
    fi
    if [[ $suites == *" cargo "* ]]; then
        local s=0
        ECHOVALUE_TEST_ADMIN_URL=$admin \
            ECHOVALUE_TEST_PROXY_URL="postgresql://echovalue_proxy@127.0.0.1:$PORT/echovalue" \
            ECHOVALUE_TEST_MAILHOOK_URL="postgresql://echovalue_mailhook@127.0.0.1:$PORT/echovalue" \
            ECHOVALUE_TEST_MAILHOOK_BIN=$TARGET_DIR/debug/echovalue-mailhook \
            cargo test -p echovalue-tests --no-fail-fast ${EV_CITUS_CARGO_ARGS:-} 2>&1 \
            | tee "$TMP/citus-cargo.log" || s=$?
        local p f
        read -r p f < <(awk '/^test result: /{
            for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i }
        } END { print p + 0, f + 0 }' "$TMP/citus-cargo.log")
        if [ "$s" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
        echo "citus cargo: $p passed, $f failed"
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
        [ "$s" -eq 0 ] || rc=1
    fi
    citus__stop
    EV_CLUSTER_DIR=${saved[0]} EV_PGDATA=${saved[1]} EV_PORT=${saved[2]} EV_PGLOG=${saved[3]} PORT=${saved[4]}
    return "$rc"
}
