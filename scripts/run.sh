#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2119  # SC2317: cleanup functions run from traps; SC2119: ensure_packages takes optional extra packages
# Start everything for local development:
#   PostgreSQL + Redis (private instances, data under .dev/), the gateway
#   (release build) and the demo log producer. Ctrl-C stops it all.
#
# Environment overrides:
#   DEV_PG_PORT     PostgreSQL port            (default 55432)
#   DEV_REDIS_PORT  Redis port                 (default 56379)
#   GATEWAY_BIND    gateway listen address     (default 127.0.0.1:8080)
#   DEMO_JOBS       job ids for the producer   (default 1,2,3)
#   DEMO_RATE       records/s per job          (default 5)
#   DEMO_PRODUCER   set to 0 to not start the demo producer
#   RUST_LOG        gateway log filter         (default info)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

ROOT="$(repo_root)"
cd "$ROOT"

DEV_PG_PORT="${DEV_PG_PORT:-55432}"
DEV_REDIS_PORT="${DEV_REDIS_PORT:-56379}"
GATEWAY_BIND="${GATEWAY_BIND:-127.0.0.1:8080}"
DEMO_JOBS="${DEMO_JOBS:-1,2,3}"
DEMO_RATE="${DEMO_RATE:-5}"
DEMO_PRODUCER="${DEMO_PRODUCER:-1}"

DEV_DIR="$ROOT/.dev"
DEV_PG_DATA="$DEV_DIR/postgres"
DEV_REDIS_DIR="$DEV_DIR/redis"
GATEWAY_LOG="$DEV_DIR/gateway.log"
PRODUCER_LOG="$DEV_DIR/producer.log"

# Address to use from the browser / curl: a wildcard bind is reached via loopback.
host_part="${GATEWAY_BIND%:*}"
port_part="${GATEWAY_BIND##*:}"
case "$host_part" in
    0.0.0.0 | "") host_part=127.0.0.1 ;;
    "[::]" | "::") host_part="[::1]" ;;
esac
BASE_URL="http://$host_part:$port_part"

GATEWAY_PID=""
PRODUCER_PID=""
SERVICES_STARTED=0
CLEANED_UP=0

stop_pid() { # stop_pid PID NAME
    local pid="$1" name="$2"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.2
    done
    warn "$name did not exit after 10s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    [[ "$CLEANED_UP" -eq 1 ]] && return 0
    CLEANED_UP=1
    trap - INT TERM
    echo >&2
    stop_pid "$PRODUCER_PID" "demo producer"
    stop_pid "$GATEWAY_PID" "gateway"
    if [[ "$SERVICES_STARTED" -eq 1 ]]; then
        stop_services "$DEV_PG_DATA" "$DEV_REDIS_PORT" || true
    fi
    log "stopped"
}
trap 'cleanup' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites ---------------------------------------------------------
ensure_packages
if ! command -v cargo >/dev/null 2>&1; then
    err "cargo not found on PATH; install Rust (https://rustup.rs) first"
    exit 1
fi

if curl -fsS -m 2 -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then
    err "something already answers on $BASE_URL (another run.sh?). Stop it or set GATEWAY_BIND."
    exit 1
fi

mkdir -p "$DEV_DIR"

# --- services --------------------------------------------------------------
SERVICES_STARTED=1
start_postgres "$DEV_PG_DATA" "$DEV_PG_PORT" session_logs
start_redis "$DEV_REDIS_DIR" "$DEV_REDIS_PORT"

# --- build -----------------------------------------------------------------
log "cargo build --release --bin session-log-gateway"
cargo build --release --bin session-log-gateway
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
GATEWAY_BIN="$target_dir/release/session-log-gateway"
if [[ ! -x "$GATEWAY_BIN" ]]; then
    err "built binary not found at $GATEWAY_BIN"
    exit 1
fi

# --- gateway ---------------------------------------------------------------
log "starting gateway on $GATEWAY_BIND (log: $GATEWAY_LOG)"
DATABASE_URL="postgres://postgres@127.0.0.1:$DEV_PG_PORT/session_logs" \
REDIS_URL="redis://127.0.0.1:$DEV_REDIS_PORT" \
GATEWAY_BIND="$GATEWAY_BIND" \
RUST_LOG="${RUST_LOG:-info}" \
    "$GATEWAY_BIN" >"$GATEWAY_LOG" 2>&1 &
GATEWAY_PID=$!

log "waiting for $BASE_URL/readyz"
ready=0
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    if curl -fsS -m 2 -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then
        ready=1
        break
    fi
    if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
if [[ "$ready" -ne 1 ]]; then
    if kill -0 "$GATEWAY_PID" 2>/dev/null; then
        err "gateway did not become ready within 60s"
    else
        err "gateway exited during start-up"
    fi
    echo "---- last 40 lines of $GATEWAY_LOG ----" >&2
    tail -n 40 "$GATEWAY_LOG" >&2 || true
    echo "----" >&2
    exit 1
fi

# --- demo producer ---------------------------------------------------------
if [[ "$DEMO_PRODUCER" != 0 ]]; then
    log "starting demo producer for jobs $DEMO_JOBS at $DEMO_RATE records/s each (log: $PRODUCER_LOG)"
    python3 -u "$SCRIPT_DIR/demo_producer.py" --url "$BASE_URL" --jobs "$DEMO_JOBS" \
        --rate "$DEMO_RATE" >"$PRODUCER_LOG" 2>&1 &
    PRODUCER_PID=$!
fi

IFS=',' read -r -a job_list <<<"$DEMO_JOBS"
echo
echo "================================================================"
echo " session-log-gateway is running ($GATEWAY_BIND)"
echo
for job in "${job_list[@]}"; do
    job="${job// /}"
    [[ -n "$job" ]] && echo "   Viewer: $BASE_URL/?job=$job"
done
echo
echo "   Gateway log:  $GATEWAY_LOG"
[[ -n "$PRODUCER_PID" ]] && echo "   Producer log: $PRODUCER_LOG"
echo "   PostgreSQL:   postgres://postgres@127.0.0.1:$DEV_PG_PORT/session_logs"
echo "   Redis:        redis://127.0.0.1:$DEV_REDIS_PORT"
echo
echo " Press Ctrl-C to stop everything (gateway, producer, PostgreSQL, Redis)."
echo "================================================================"
echo

# Stay in the foreground until the gateway exits or we are interrupted.
set +e
wait "$GATEWAY_PID"
status=$?
set -e
GATEWAY_PID=""
err "gateway exited unexpectedly (status $status); last lines of $GATEWAY_LOG:"
tail -n 40 "$GATEWAY_LOG" >&2 || true
exit 1
