# shellcheck shell=bash
# The scale-out suite (SPEC section 18, issue 14), sourced by tests/run.sh (part `citus`): a
# Citus coordinator and two workers, each a private cluster on its own loopback port, with
# the extension installed on the coordinator (Citus creates it on the workers) and
# echovalue.distribute() run. Suites, each printing "citus <suite>: N passed, N failed":
#   seeds    the seed snippets against a proxy connected to the coordinator
#   cargo    the HTTP and mail integration tests (cargo test -p echovalue-tests -p
#            echovalue-mailhook), proxy and mailhook connected to the coordinator
#   routing  every API function called as the proxy calls it is planned as one task on the
#            node of its wallet, for a wallet on each worker (tests/citus_routing.sql)
#   worker   the seed snippets against a proxy connected to a worker (any node routes)
#   maintenance  maintenance_run() purges what is due across the shards and nothing else
#            (tests/citus_maintenance.sql)
#   memory   on each worker, no delegated API function makes its connection's memory grow
#            with every call (tests/citus_memory.sql)
#   update   the last released version, distributed and holding a wallet, updated with ALTER
#            EXTENSION UPDATE and distributed again, in a database of its own: the wallet
#            still works, every node has the fresh install's functions and settings, and
#            every call is routed (tests/citus_update.sql, then tests/citus_routing.sql)
# Skipped, and said so, where Citus is not installed for this Postgres.
#
# EV_CITUS_SUITES picks suites (default: all seven). The HTTP tests' fault injection puts a
# trigger on echovalue.kv (Admin::fail_kv_writes_of), which Citus allows on a distributed table
# only with citus.enable_unsafe_triggers; echovalue itself has no trigger on one.

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
            EV_PG_EXTRA_CONF=$'max_connections = 300\ncitus.enable_unsafe_triggers = on' \
            ev_cluster_start "$TMP/citus/n$n" "$port" echovalue 9>&- || return 1
        CITUS_NODES+=("$EV_CLUSTER_DIR $port")
    done
    citus__database echovalue || return 1
    ev_db_prepare echovalue
    ev_psql echovalue -tA -c 'select echovalue.distribute()'
    # As the README's "Scale-out on Citus" says: the proxy's lock_timeout on every node (Citus
    # passes ALTER ROLE … SET on to the workers), where a delegated call waits for its rows.
    ev_psql echovalue -tA -c "alter role echovalue_proxy set lock_timeout = '2s'" >/dev/null
}

# Database $1 on every node, with Citus, and the workers added to its coordinator (node 0,
# where the helpers point afterwards).
citus__database() {
    local n
    for n in 0 1 2; do
        citus__use "$n"
        ev_psql postgres -c "create database $1" >/dev/null || return 1
        ev_psql "$1" -c 'set client_min_messages = warning' -c 'create extension citus' >/dev/null || return 1
    done
    citus__use 0
    ev_psql "$1" -tA -c "select citus_set_coordinator_host('127.0.0.1', $PORT)" \
        -c "select citus_add_node('127.0.0.1', $(cut -d' ' -f2 <<<"${CITUS_NODES[1]}"))" \
        -c "select citus_add_node('127.0.0.1', $(cut -d' ' -f2 <<<"${CITUS_NODES[2]}"))" >/dev/null
}

# Counts the `ok`/`FAIL` lines of suite log $2 as "citus $1" ($3: the suite's exit status), prints
# them, the errors and the count; fails when anything failed.
citus__tally() {
    awk -v suite="citus $1" '/^ok /{ p++ } /^FAIL /{ f++ } /^(ok|FAIL) |ERROR/{ print }
        END { print suite ": " p + 0 " passed, " f + 0 " failed" }' "$2" | tee "$2.txt"
    count_suite "citus $1" "$2.txt" "$3"
    [ "$3" -eq 0 ] && ! grep -q '^FAIL' "$2.txt"
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
    local rc=0 suites=" ${EV_CITUS_SUITES:-seeds cargo routing worker maintenance memory update} "
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
        citus__seeds 0 seeds || rc=1
    fi
    if [[ $suites == *" cargo "* ]]; then
        local s=0
        cargo build -p echovalue-mailhook 2>&1 | tail -n 3 || true
        ECHOVALUE_TEST_ADMIN_URL=$admin \
            ECHOVALUE_TEST_PROXY_URL="postgresql://echovalue_proxy@127.0.0.1:$PORT/echovalue" \
            ECHOVALUE_TEST_MAILHOOK_URL="postgresql://echovalue_mailhook@127.0.0.1:$PORT/echovalue" \
            ECHOVALUE_TEST_MAILHOOK_BIN=$TARGET_DIR/debug/echovalue-mailhook \
            cargo test -p echovalue-tests -p echovalue-mailhook --no-fail-fast ${EV_CITUS_CARGO_ARGS:-} 2>&1 \
            | tee "$TMP/citus-cargo.log" || s=$?
        count_cargo "$TMP/citus-cargo.log" "$s" "citus cargo"
        [ "$s" -eq 0 ] || rc=1
    fi
    if [[ $suites == *" routing "* ]]; then
        local s=0
        ev_psql echovalue -tA -f tests/citus_routing.sql >"$TMP/citus-routing.log" 2>&1 || s=$?
        citus__routing "$TMP/citus-routing.log" | tee "$TMP/citus-routing.txt"
        count_suite "citus routing" "$TMP/citus-routing.txt" "$s"
        [ "$s" -eq 0 ] && ! grep -q '^FAIL' "$TMP/citus-routing.txt" || rc=1
    fi
    if [[ $suites == *" worker "* ]]; then
        citus__seeds 1 worker || rc=1
    fi
    if [[ $suites == *" maintenance "* ]]; then
        local s=0
        ev_psql echovalue -tA -f tests/citus_maintenance.sql >"$TMP/citus-maintenance.log" 2>&1 || s=$?
        citus__tally maintenance "$TMP/citus-maintenance.log" "$s" || rc=1
    fi
    if [[ $suites == *" memory "* ]]; then
        citus__memory || rc=1
    fi
    if [[ $suites == *" update "* ]]; then
        citus__update || rc=1
    fi
    citus__stop
    EV_CLUSTER_DIR=${saved[0]} EV_PGDATA=${saved[1]} EV_PORT=${saved[2]} EV_PGLOG=${saved[3]} PORT=${saved[4]}
    return "$rc"
}

# tests/citus_memory.sql on each worker, for a wallet of that worker: counted as "citus memory".
citus__memory() {
    local n s=0
    : >"$TMP/citus-memory.log"
    for n in 1 2; do
        citus__use "$n"
        ev_psql echovalue -tA -f tests/citus_memory.sql >"$TMP/citus-memory-$n.log" 2>&1 || s=1
        sed "s/\$/ (worker $n)/" "$TMP/citus-memory-$n.log" >>"$TMP/citus-memory.log"
    done
    citus__use 0
    citus__tally memory "$TMP/citus-memory.log" "$s"
}

# The update suite (tests/citus_update.sql) in database ev_up, made with Citus on every node;
# counted as "citus update".
citus__update() {
    local n s=0 old new fresh updated
    old=$(ls tests/upgrade/echovalue--*.sql | sed 's/.*echovalue--//; s/\.sql$//' | sort -V | tail -n 1)
    new=$(ev_psql echovalue -tA -c "select extversion from pg_catalog.pg_extension where extname = 'echovalue'")
    echo "citus update: from $old to $new"
    ev_install_old_version "tests/upgrade/echovalue--$old.sql"
    citus__database ev_up || s=1
    {
        ev_psql ev_up -tA -v old="$old" -v new="$new" -f tests/citus_update.sql 2>&1 || s=1
        # every node: the functions (definitions and settings) of the fresh install's
        for n in 0 1 2; do
            citus__use "$n"
            fresh=$(ev_psql echovalue -tA -f tests/citus_functions.sql)
            updated=$(ev_psql ev_up -tA -f tests/citus_functions.sql)
            if [ -n "$fresh" ] && [ "$fresh" = "$updated" ]; then
                echo "ok    node $n has the fresh install's functions and settings"
            else
                echo "FAIL  node $n: its functions or their settings differ from the fresh install's"
            fi
        done
        citus__use 0
        ev_psql ev_up -tA -f tests/citus_routing.sql >"$TMP/citus-update-routing.log" 2>&1 || s=1
        citus__routing "$TMP/citus-update-routing.log" | grep -v '^citus routing:'
    } >"$TMP/citus-update.log"
    citus__tally update "$TMP/citus-update.log" "$s"
}

# The seed snippets against a proxy connected to node $1 (0: the coordinator), counted as
# "citus $2". The token rate limit is off meanwhile (set on the coordinator, which passes it
# on to the workers); on a worker the proxy finds the database the coordinator made.
citus__seeds() {
    local node=$1 label=$2 s=0
    ev_psql echovalue -c 'alter database echovalue set echovalue.token_rate_seconds = 0'
    citus__use "$node"
    if EV_NO_PREPARE=$((node > 0 ? 1 : 0)) start_proxy echovalue; then
        python3 tests/seeds/run_snippets.py --base-url "http://127.0.0.1:$PROXY_PORT" \
            --seeds-dir "${EV_SEEDS_DIR:-$ROOT/../shared/seeds}" 2>&1 \
            | sed "s/^seeds:/citus $label:/" | tee "$TMP/citus-$label.log" || s=$?
        count_suite "citus $label" "$TMP/citus-$label.log" "$s"
        stop_proxy "$s" echovalue
    else
        suite_broken || s=1
    fi
    citus__use 0
    ev_psql echovalue -c 'alter database echovalue reset echovalue.token_rate_seconds'
    return "$s"
}

# Reads tests/citus_routing.sql's output ($1): a "=<function>|<node>" line, then that call's
# plan. A call passes when its plan is one task on the node of its wallet.
citus__routing() {
    awk -F'|' '
        function check() {
            if (fn == "") return
            if (tasks == "1" && node == want) { print "ok    " fn " on " want; ok++ }
            else {
                print "FAIL  " fn ": " (tasks == "" ? "not delegated" : tasks " tasks on " node) ", its wallet is on " want
                bad++
            }
            fn = ""
        }
        /^=workers\|/ { workers = $2; next }
        /^=/ { check(); fn = substr($1, 2); want = $2; tasks = ""; node = ""; next }
        /Task Count: / { tasks = $0; sub(/.*Task Count: /, "", tasks) }
        /Node: host=/ {
            h = $0; sub(/.*host=/, "", h); sub(/ .*/, "", h)
            p = $0; sub(/.*port=/, "", p); sub(/ .*/, "", p)
            node = h ":" p
        }
        /ERROR/ { print "FAIL  " $0; bad++ }
        END {
            check()
            if (workers + 0 < 2) { print "FAIL  wallets were found on " workers + 0 " workers only"; bad++ }
            print "citus routing: " ok + 0 " passed, " bad + 0 " failed"
        }' "$1"
}
