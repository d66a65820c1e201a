# shellcheck shell=bash
# Sourced by bench/run.sh and bench/mail.sh: the repository root, the cluster library, the
# install lock, a temp dir ($TMP, kept on failure or with BENCH_KEEP_TMP=1), and a cleanup that
# stops every process listed in BENCH_PIDS and the cluster.
#   bench_begin NAME       all of the above, TMP=/tmp/echovalue-NAME.XXXXXX
#   bench_build PACKAGE…   the extension (release) installed, and the release binaries built
#   bench_wait_port HOST:PORT NAME LOG   up to 10 s for a listener; else NAME's LOG, status 1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/cluster.sh
source "$ROOT/tests/cluster.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_PIDS=()

bench_cleanup() {
    local rc=$?
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ev_cluster_stop
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "bench: files kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    return "$rc"
}

bench_begin() {
    ev_take_install_lock bench
    TMP=$(mktemp -d "/tmp/echovalue-$1.XXXXXX")
    chmod 0755 "$TMP"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# The extension, release build, into the system Postgres.
bench_install() {
    ev_install_extension --release >"$TMP/install.log" 2>&1 || {
        tail -n 40 "$TMP/install.log"
        exit 1
    }
}

bench_build() {
    echo "bench: building (release)"
    bench_install
    local args=() pkg
    for pkg in "$@"; do args+=(-p "$pkg"); done
    cargo build --release -q "${args[@]}"
}

bench_wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "bench: $2 on $1 did not start; its log:" >&2
    cat "$3" >&2
    return 1
}
