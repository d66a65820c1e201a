# shellcheck shell=bash
# Bench row 5: what a user might pick instead for an HTTP key-value store, Redis behind webdis
# (the Debian packages redis-server and webdis), with a durable SET. Sourced by bench/run.sh
# after bench_begin; or on its own, without building anything, for the webdis rows alone:
#   bash bench/webdis.sh          # BENCH_SECONDS per cell (default 8)
#
#   webdis_start DIR   a private redis-server and webdis on free loopback ports, their files in
#                      DIR, their pids in BENCH_PIDS (stopped by bench_cleanup); sets WEBDIS_ARGS
#                      to bench.py's --webdis-* options, left empty when they are missing
#                      (BENCH_WEBDIS=0 skips them too): the rest of the bench runs without row 5.
#
# The machine's own Redis, if any, is never used: this one has its own port and data dir.

WEBDIS_ARGS=()

# True when redis-server and webdis are there, installing the missing ones first (apt-get, as
# .ci/setup installs its packages) when this shell is root or has sudo without a password.
# On a machine with systemd the packages also start their own services (Redis on 6379, webdis
# on 7379); the bench uses neither. 9>&-: a service an init script starts must not keep the
# install lock either.
webdis_installed() {
    local missing=() sudo=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v webdis >/dev/null 2>&1 || missing+=(webdis)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "bench: ${missing[*]} missing; skipping the webdis rows" \
                "(to have them: sudo apt-get install -y ${missing[*]})" >&2
            return 1
        fi
    fi
    echo "bench: installing ${missing[*]} (Debian packages) for the webdis rows" >&2
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"; } >"$TMP/apt.log" 2>&1 9>&-; then
        tail -n 5 "$TMP/apt.log" >&2
        echo "bench: apt-get install ${missing[*]} failed; skipping the webdis rows" >&2
        return 1
    fi
}

webdis_start() {
    local dir=$1 redis_port http_port redis_pid webdis_pid
    WEBDIS_ARGS=()
    if [ "${BENCH_WEBDIS:-1}" = 0 ]; then
        echo "bench: BENCH_WEBDIS=0: skipping the webdis rows" >&2
        return 0
    fi
    webdis_installed || return 0
    mkdir -p "$dir"

    redis_port=$(ev_free_port 0)
    # Durable like the echovalue cluster: appendfsync always writes and fsyncs the AOF before
    # any reply of the event-loop round goes out (one fsync per round, Redis's group commit).
    # No RDB snapshot and no AOF rewrite during the run: both fork and write in the background,
    # like the checkpoint that run.sh keeps out of the cells (recovery time, not durability).
    cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $redis_port
daemonize no
dir $dir
logfile ""
appendonly yes
appendfsync always
save ""
auto-aof-rewrite-percentage 0
EOF
    # 9>&-: see tests/run.sh (servers must not keep the install lock)
    redis-server "$dir/redis.conf" >"$dir/redis.log" 2>&1 9>&- &
    redis_pid=$!
    BENCH_PIDS+=("$redis_pid")
    bench_wait_port "127.0.0.1:$redis_port" redis-server "$dir/redis.log" || return 0

    http_port=$(ev_free_port 0)
    # webdis 0.1.9 (Debian 12) reads "pool_size" (Redis connections per thread; the newer
    # "pool_size_per_thread" would be ignored). 2 threads, one per core of the bench machine,
    # 8 connections each: 16, the proxy's default pool. Only GET and SET are let through.
    # Warnings only (verbosity 1), like the proxy's ECHOVALUE_LOG=warn; the log and pid file in
    # DIR, not in the current directory (the repository).
    cat >"$dir/webdis.json" <<EOF
{
    "redis_host": "127.0.0.1",
    "redis_port": $redis_port,
    "http_host": "127.0.0.1",
    "http_port": $http_port,
    "threads": 2,
    "pool_size": 8,
    "daemonize": false,
    "pidfile": "$dir/webdis.pid",
    "database": 0,
    "websockets": false,
    "logfile": "$dir/webdis.log",
    "verbosity": 1,
    "acl": [{"disabled": ["*"]}, {"enabled": ["GET", "SET"]}]
}
EOF
    webdis "$dir/webdis.json" >"$dir/webdis.out" 2>&1 9>&- &
    webdis_pid=$!
    BENCH_PIDS+=("$webdis_pid")
    bench_wait_port "127.0.0.1:$http_port" webdis "$dir/webdis.out" || return 0

    WEBDIS_ARGS=(--webdis-url "http://127.0.0.1:$http_port" --redis-pid "$redis_pid"
        --webdis-pid "$webdis_pid" --redis-aof "$dir/appendonlydir")
}

# On its own: only the webdis rows. No install lock (nothing of the extension is used) and no
# build; the temp dir and the cleanup of bench/common.sh.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck source=bench/common.sh
    source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
    TMP=$(mktemp -d /tmp/echovalue-webdis.XXXXXX)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    webdis_start "$TMP/webdis"
    if [ "${#WEBDIS_ARGS[@]}" -eq 0 ]; then
        exit 1
    fi
    python3 bench/bench.py --webdis-only "${WEBDIS_ARGS[@]}" \
        --seconds "${BENCH_SECONDS:-8}" --work "$TMP" ${BENCH_OUT:+--out "$BENCH_OUT"}
fi
