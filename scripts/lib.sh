# shellcheck shell=bash
# Shared helpers for the session-log-gateway dev/test scripts.
#
# Source it:   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Functions:
#   ensure_packages [EXTRA_PKG...]  install missing Debian packages (redis, PostgreSQL,
#                                   python3, curl, plus any extra package names)
#   pg_bin                          print the PostgreSQL bin directory
#   start_postgres DATA_DIR PORT [DB]   init (if needed) + start a private cluster,
#                                   create database DB (default session_logs)
#   stop_postgres DATA_DIR
#   start_redis DIR PORT            start a private, non-persistent redis-server
#   stop_redis PORT
#   stop_services [PG_DATA_DIR [REDIS_PORT]]   stop both (defaults: $DEV_PG_DATA, $DEV_REDIS_PORT)
#   repo_root                       print the repository root
#
# Everything here is idempotent: starting something that already runs, or
# stopping something that is not running, is a no-op.
#
# Deliberately does not change shell options (set -e etc.); callers choose.

if [[ -n "${_SLG_LIB_LOADED:-}" ]]; then
    return 0
fi
_SLG_LIB_LOADED=1
_SLG_APT_UPDATED=0
_SLG_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

log()  { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
err()  { printf 'ERROR: %s\n' "$*" >&2; }

# Print the repository root (git top level, else the parent of scripts/).
repo_root() {
    local top
    if top="$(git -C "$_SLG_LIB_DIR" rev-parse --show-toplevel 2>/dev/null)" && [[ -n "$top" ]]; then
        printf '%s\n' "$top"
    else
        (cd "$_SLG_LIB_DIR/.." && pwd -P)
    fi
}

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------

# Run a command as root (directly, or through sudo).
_as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

# Is Debian package $1 installed (or, failing dpkg, a command of that name on PATH)?
_pkg_installed() {
    local status
    if command -v dpkg-query >/dev/null 2>&1; then
        status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
        [[ "$status" == *" ok installed" ]] && return 0
    fi
    command -v "$1" >/dev/null 2>&1
}

_apt_update_once() {
    if [[ "$_SLG_APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        _SLG_APT_UPDATED=1
    fi
}

# Print the psql to use with the cluster binaries in $1 (may be empty).
_psql_bin() {
    local bin="${1:-}"
    if [[ -n "$bin" && -x "$bin/psql" ]]; then
        printf '%s\n' "$bin/psql"
    else
        command -v psql 2>/dev/null
    fi
}

# ensure_packages [EXTRA_PKG...]
# Always checks: redis-server + redis-cli, PostgreSQL server binaries (initdb,
# pg_ctl, postgres) + psql, python3, curl. Extra arguments are Debian package
# names that must be installed as well (e.g. `ensure_packages chromium chromium-driver`).
ensure_packages() {
    local -a want=()
    local pkg bin

    command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
    command -v redis-cli    >/dev/null 2>&1 || want+=(redis-tools)
    if bin="$(pg_bin 2>/dev/null)"; then
        _psql_bin "$bin" >/dev/null || want+=(postgresql-client)
    else
        want+=(postgresql)
    fi
    command -v python3 >/dev/null 2>&1 || want+=(python3)
    command -v curl    >/dev/null 2>&1 || want+=(curl)
    for pkg in "$@"; do
        _pkg_installed "$pkg" || want+=("$pkg")
    done

    # de-duplicate, keep order
    local -a missing=()
    local -A seen=()
    for pkg in "${want[@]}"; do
        [[ -n "${seen[$pkg]:-}" ]] && continue
        seen[$pkg]=1
        missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi

    if ! command -v apt-get >/dev/null 2>&1; then
        err "missing packages: ${missing[*]} (and apt-get is not available; install them manually)"
        return 1
    fi
    if [[ "$(id -u)" -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        err "missing packages: ${missing[*]}"
        err "not running as root and sudo is not available; as root run: apt-get update && apt-get install -y ${missing[*]}"
        return 1
    fi

    log "installing missing packages: ${missing[*]}"
    _apt_update_once || { err "apt-get update failed"; return 1; }
    if ! _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        err "apt-get install failed for: ${missing[*]}"
        return 1
    fi

    # Verify the essentials really are there now.
    local -a still=()
    command -v redis-server >/dev/null 2>&1 || still+=(redis-server)
    command -v redis-cli    >/dev/null 2>&1 || still+=(redis-cli)
    if bin="$(pg_bin 2>/dev/null)"; then
        _psql_bin "$bin" >/dev/null || still+=(psql)
    else
        still+=(initdb)
    fi
    command -v python3 >/dev/null 2>&1 || still+=(python3)
    command -v curl    >/dev/null 2>&1 || still+=(curl)
    for pkg in "$@"; do
        _pkg_installed "$pkg" || still+=("$pkg")
    done
    if [[ ${#still[@]} -gt 0 ]]; then
        err "still missing after installation: ${still[*]}"
        return 1
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

# pg_bin: print the PostgreSQL bin directory (containing initdb, pg_ctl, postgres).
# Prefers the initdb found on PATH (symlinks resolved), else the newest
# /usr/lib/postgresql/*/bin.
pg_bin() {
    local p d
    if p="$(command -v initdb 2>/dev/null)"; then
        d="$(dirname "$(readlink -f "$p")")"
        if [[ -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    d="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | while read -r c; do
            [[ -x "$c/initdb" && -x "$c/pg_ctl" && -x "$c/postgres" ]] && printf '%s\n' "$c"
         done | tail -n1)"
    if [[ -n "$d" ]]; then
        printf '%s\n' "$d"
        return 0
    fi
    err "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; run ensure_packages"
    return 1
}

# initdb/pg_ctl/postgres refuse to run as root: when root, run as `postgres`.
_pg_run() {
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

_ensure_pg_user() {
    [[ "$(id -u)" -eq 0 ]] || return 0
    id -u postgres >/dev/null 2>&1 && return 0
    log "creating system user 'postgres'"
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
        --shell /bin/bash postgres
}

# Make sure the postgres user can reach $1 (adds o+x on ancestors that block it).
_ensure_traversable() {
    local target="$1" d
    [[ "$(id -u)" -eq 0 ]] || return 0
    runuser -u postgres -- test -x "$target" 2>/dev/null && return 0
    d="$(dirname "$target")"
    while [[ "$d" != "/" ]]; do
        if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
            log "chmod o+x $d (so the postgres user can reach $target)"
            chmod o+x "$d" || return 1
        fi
        d="$(dirname "$d")"
    done
    runuser -u postgres -- test -x "$target"
}

_pg_is_running() {
    local bin="$1" data="$2"
    [[ -f "$data/PG_VERSION" ]] || return 1
    _pg_run "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

# start_postgres DATA_DIR PORT [DB_NAME]
start_postgres() {
    local data="${1:?start_postgres DATA_DIR PORT [DB]}" port="${2:?start_postgres DATA_DIR PORT [DB]}"
    local db="${3:-session_logs}"
    local bin psql running_port

    bin="$(pg_bin)" || return 1
    psql="$(_psql_bin "$bin")" || { err "psql not found; run ensure_packages"; return 1; }

    mkdir -p "$data" || return 1
    data="$(cd "$data" && pwd -P)" || return 1

    if [[ "$(id -u)" -eq 0 ]]; then
        _ensure_pg_user || return 1
        if [[ "$(stat -c %U "$data")" != postgres ]]; then
            chown -R postgres:postgres "$data" || return 1
        fi
        _ensure_traversable "$data" || { err "postgres user cannot access $data"; return 1; }
    fi
    chmod 700 "$data" || return 1

    if [[ ! -f "$data/PG_VERSION" ]]; then
        if [[ -n "$(ls -A "$data")" ]]; then
            err "$data is not empty but holds no PostgreSQL cluster; remove it or pick another directory"
            return 1
        fi
        log "initdb $data"
        local initlog
        initlog="$(mktemp)" || return 1
        if ! _pg_run "$bin/initdb" -D "$data" --auth=trust -U postgres -E UTF8 --locale=C >"$initlog" 2>&1; then
            cat "$initlog" >&2
            rm -f "$initlog"
            err "initdb failed"
            return 1
        fi
        rm -f "$initlog"
    fi

    if _pg_is_running "$bin" "$data"; then
        running_port="$(sed -n 4p "$data/postmaster.pid" 2>/dev/null || true)"
        if [[ -n "$running_port" && "$running_port" != "$port" ]]; then
            log "PostgreSQL in $data runs on port $running_port, restarting on $port"
            _pg_run "$bin/pg_ctl" stop -D "$data" -m fast -w >/dev/null || return 1
        else
            log "PostgreSQL already running ($data, port $port)"
        fi
    fi
    if ! _pg_is_running "$bin" "$data"; then
        log "starting PostgreSQL on 127.0.0.1:$port ($data)"
        if ! _pg_run "$bin/pg_ctl" start -w -t 60 -D "$data" -l "$data/server.log" \
                -o "-p $port -k '$data' -c listen_addresses=127.0.0.1" >/dev/null; then
            err "PostgreSQL failed to start; last lines of $data/server.log:"
            tail -n 30 "$data/server.log" >&2 2>/dev/null || true
            return 1
        fi
    fi

    local -a pq=("$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1)
    local exists=""
    for _ in $(seq 1 30); do
        if exists="$(PGCONNECT_TIMEOUT=5 "${pq[@]}" -d postgres -tAc \
                "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>/dev/null)"; then
            break
        fi
        exists="error"
        sleep 1
    done
    if [[ "$exists" == error ]]; then
        err "cannot connect to PostgreSQL on 127.0.0.1:$port"
        return 1
    fi
    if [[ "$exists" != 1 ]]; then
        log "creating database $db"
        PGCONNECT_TIMEOUT=5 "${pq[@]}" -d postgres -c "CREATE DATABASE \"$db\"" || return 1
    fi
}

# stop_postgres DATA_DIR
stop_postgres() {
    local data="${1:?stop_postgres DATA_DIR}" bin
    [[ -f "$data/PG_VERSION" ]] || return 0
    bin="$(pg_bin)" || return 1
    if _pg_is_running "$bin" "$data"; then
        log "stopping PostgreSQL ($data)"
        _pg_run "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null || return 1
    fi
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

_redis_ping() {
    [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]
}

# start_redis DIR PORT
start_redis() {
    local dir="${1:?start_redis DIR PORT}" port="${2:?start_redis DIR PORT}"
    if _redis_ping "$port"; then
        log "Redis already running on 127.0.0.1:$port"
        return 0
    fi
    mkdir -p "$dir" || return 1
    dir="$(cd "$dir" && pwd -P)" || return 1
    log "starting Redis on 127.0.0.1:$port ($dir)"
    if ! redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --save "" --appendonly no; then
        err "redis-server failed to start"
        return 1
    fi
    for _ in $(seq 1 50); do
        _redis_ping "$port" && return 0
        sleep 0.2
    done
    err "Redis did not answer PING on port $port; last lines of $dir/redis.log:"
    tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
    return 1
}

# stop_redis PORT
stop_redis() {
    local port="${1:?stop_redis PORT}"
    _redis_ping "$port" || return 0
    log "stopping Redis (port $port)"
    timeout 10 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do
        _redis_ping "$port" || return 0
        sleep 0.2
    done
    err "Redis on port $port did not shut down"
    return 1
}

# stop_services [PG_DATA_DIR [REDIS_PORT]]
# Defaults: $DEV_PG_DATA and $DEV_REDIS_PORT. Stops whatever it can, returns
# non-zero if anything failed.
stop_services() {
    local data="${1:-${DEV_PG_DATA:-}}" port="${2:-${DEV_REDIS_PORT:-}}" rc=0
    if [[ -n "$data" ]]; then
        stop_postgres "$data" || rc=1
    fi
    if [[ -n "$port" ]]; then
        stop_redis "$port" || rc=1
    fi
    return "$rc"
}
