# shellcheck shell=bash
# Sourced library: install the echovalue extension into the system Postgres 15 and run a
# private cluster (own data dir, socket dir and port) beside the machine's default one, which
# is never touched. Used by tests/run.sh, bench/ and .ci/serve.
#
#   ev_install_extension [--dev|--release]  build + install the extension (dev by default)
#   ev_cluster_start DIR PORT [APP_DB]  initdb DIR/data once, (re)write its settings, start it
#   ev_db_prepare [DB]                  database, extension, proxy and mailhook login roles (idempotent)
#   ev_cluster_stop                     stop the cluster started by ev_cluster_start
#   ev_psql [DB] [psql args...]         psql as the superuser over the cluster's socket
#   ev_take_install_lock WHO            hold the install lock on fd 9 (waits for other runs)
#
# EV_PG_PRELOAD replaces the preloaded libraries (tests/citus.sh: 'citus,echovalue'), and
# EV_PG_EXTRA_CONF is appended to the settings.
# After ev_cluster_start: EV_CLUSTER_DIR, EV_PGDATA, EV_PORT, EV_PGLOG, EV_APP_DB are set.
# Postgres refuses to run as root, so as root the cluster runs as the `postgres` user.

EV_PG_BIN=${EV_PG_BIN:-/usr/lib/postgresql/15/bin}
EV_PG_CONFIG=${EV_PG_CONFIG:-$EV_PG_BIN/pg_config}
EV_PG_SUPERUSER=postgres

ev_log() { printf 'cluster: %s\n' "$*" >&2; }

ev_is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a Postgres server program as the user that owns the cluster.
ev_as_pg() {
    if ev_is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ev_repo_root() {
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    printf '%s\n' "$here"
}

ev_install_extension() {
    local profile_args=()
    case "${1:---dev}" in
    --release) profile_args=(--release) ;;
    --dev) ;;
    *)
        ev_log "usage: ev_install_extension [--dev|--release]"
        return 2
        ;;
    esac
    local sudo_args=()
    # The system extension directories belong to root.
    if ! ev_is_root; then
        sudo_args=(--sudo)
    fi
    ev_log "installing the extension (${profile_args[*]:-dev profile}) into $("$EV_PG_CONFIG" --pkglibdir)"
    (cd "$(ev_repo_root)/extension" &&
        cargo pgrx install --pg-config "$EV_PG_CONFIG" "${profile_args[@]}" "${sudo_args[@]}")
}

# Writes the settings the cluster needs into DATA/echovalue.conf, which postgresql.conf
# includes; rewriting it on every start keeps a reused data dir in step with the arguments.
ev__write_conf() { # returns 1 when the file already held these settings
    local data=$1 dir=$2 port=$3 app_db=$4
    local conf
    conf=$(
        cat <<EOF
# Written by tests/cluster.sh on every start; edit postgresql.conf for local changes.
shared_preload_libraries = '${EV_PG_PRELOAD:-echovalue}'
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
unix_socket_permissions = 0770
echovalue.maintenance_database = '$app_db'
fsync = ${EV_PG_FSYNC:-on}
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
${EV_PG_EXTRA_CONF:-}
EOF
    )
    if [ "$(cat "$data/echovalue.conf" 2>/dev/null)" = "$conf" ]; then
        return 1 # unchanged
    fi
    printf '%s\n' "$conf" | ev_as_pg tee "$data/echovalue.conf" >/dev/null
    if ! grep -q "^include_if_exists = 'echovalue.conf'" "$data/postgresql.conf"; then
        printf "\ninclude_if_exists = 'echovalue.conf'\n" | ev_as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi
}

ev_cluster_start() {
    local dir=${1:?usage: ev_cluster_start DIR PORT [APP_DB]}
    local port=${2:?usage: ev_cluster_start DIR PORT [APP_DB]}
    local app_db=${3:-echovalue}
    local lib
    lib="$("$EV_PG_CONFIG" --pkglibdir)/echovalue.so"
    if [ ! -f "$lib" ]; then
        ev_log "$lib is missing: run ev_install_extension first"
        return 1
    fi

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if ev_is_root; then
        chown postgres:postgres "$dir"
        chmod 0700 "$dir"
        if ! runuser -u postgres -- test -x "$dir"; then
            ev_log "the postgres user cannot reach $dir (a parent directory is closed to it)"
            return 1
        fi
    fi
    EV_CLUSTER_DIR=$dir
    EV_PGDATA=$dir/data
    EV_PORT=$port
    EV_PGLOG=$dir/postgres.log
    EV_APP_DB=$app_db
    export EV_CLUSTER_DIR EV_PGDATA EV_PORT EV_PGLOG EV_APP_DB

    if [ -f "$EV_PGDATA/PG_VERSION" ]; then
        ev_log "reusing the data directory $EV_PGDATA"
    else
        ev_log "initdb $EV_PGDATA"
        # Peer/trust on the private socket only; TCP needs a password unless the caller asks
        # for trust (throwaway test clusters do).
        ev_as_pg "$EV_PG_BIN/initdb" -D "$EV_PGDATA" -U "$EV_PG_SUPERUSER" -E UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host="${EV_PG_AUTH_HOST:-scram-sha-256}" >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
    fi
    local conf_changed=0
    if ev__write_conf "$EV_PGDATA" "$dir" "$port" "$app_db"; then
        conf_changed=1
    fi

    if ev_as_pg "$EV_PG_BIN/pg_ctl" -D "$EV_PGDATA" status >/dev/null 2>&1; then
        if [ "$conf_changed" = 1 ]; then
            ev_log "already running; restarting to apply changed settings"
            ev_as_pg "$EV_PG_BIN/pg_ctl" -D "$EV_PGDATA" -m fast -w restart -l "$EV_PGLOG" >/dev/null
        else
            ev_log "already running on port $port"
        fi
    else
        ev_log "starting on port $port (socket dir $dir, log $EV_PGLOG)"
        if ! ev_as_pg "$EV_PG_BIN/pg_ctl" -D "$EV_PGDATA" -l "$EV_PGLOG" -w -t 60 start >/dev/null; then
            ev_log "start failed; the end of $EV_PGLOG:"
            tail -n 30 "$EV_PGLOG" >&2 || true
            return 1
        fi
    fi
}

ev_psql() {
    local db=${1:-${EV_APP_DB:-echovalue}}
    shift || true
    "$EV_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$EV_CLUSTER_DIR" -p "$EV_PORT" \
        -U "$EV_PG_SUPERUSER" -d "$db" "$@"
}

ev_db_prepare() {
    local db=${1:-${EV_APP_DB:-echovalue}}
    if [ "$(ev_psql postgres -tA -c "select 1 from pg_database where datname = '$db'")" != "1" ]; then
        ev_log "creating database $db"
        ev_psql postgres -c "create database \"$db\""
    fi
    # `alter extension … update` brings a reused database to the installed version.
    ev_psql "$db" <<'SQL'
set client_min_messages = warning;
create extension if not exists echovalue;
alter extension echovalue update;
do $$
begin
    if not exists (select from pg_roles where rolname = 'echovalue_proxy') then
        create role echovalue_proxy login in role echovalue_gateway;
    end if;
    if not exists (select from pg_roles where rolname = 'echovalue_mailhook') then
        create role echovalue_mailhook login in role echovalue_worker;
    end if;
end
$$;
-- (a proxy role made before 0.6.0 was in echovalue_api only)
grant echovalue_gateway to echovalue_proxy;
SQL
    ev_log "database $db ready (extension $(ev_psql "$db" -tA -c "select extversion from pg_extension where extname = 'echovalue'"))"
}

ev_cluster_stop() {
    if [ -z "${EV_PGDATA:-}" ] || [ ! -f "$EV_PGDATA/postmaster.pid" ]; then
        return 0
    fi
    ev_log "stopping the cluster in $EV_PGDATA"
    ev_as_pg "$EV_PG_BIN/pg_ctl" -D "$EV_PGDATA" -m fast -w -t 60 stop >/dev/null || true
}

# The extension goes into the system Postgres directories, which every checkout on this machine
# shares: one run at a time installs and uses it (a second one waits here rather than swap the
# library under the first). The lock is held on fd 9 until the shell (or subshell) exits;
# long-lived servers are started with 9>&- so they do not keep it.
ev_take_install_lock() {
    exec 9>/tmp/echovalue-install.lock
    if ! flock -n 9; then
        echo "${1:-run}: waiting for /tmp/echovalue-install.lock (another run is using the extension)" >&2
        flock 9
    fi
}

# Puts the install script $1 of an earlier version into Postgres's extension directory, so
# that `create extension echovalue version '…'` can make it (cargo pgrx installs the current
# version and the upgrade scripts, not old versions).
ev_install_old_version() {
    local ext_dir
    ext_dir="$("$EV_PG_CONFIG" --sharedir)/extension"
    if ev_is_root; then install -m 0644 "$1" "$ext_dir/"; else sudo install -m 0644 "$1" "$ext_dir/"; fi
}

# A TCP port on 127.0.0.1 that nothing listens on, preferring the given one.
ev_free_port() {
    python3 - "${1:-0}" <<'PY'
import socket, sys
want = int(sys.argv[1])
for port in ([want] if want else []) + [0]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1])
        break
    except OSError:
        continue
    finally:
        s.close()
PY
}
