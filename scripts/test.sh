#!/usr/bin/env bash
# shellcheck disable=SC2119  # ensure_packages takes optional extra package names, none needed here
# The test command: lint (clippy, rustfmt) and run every test target.
#
# The integration tests start their own PostgreSQL and redis-server; this
# script only makes sure those binaries (and python3/curl) are installed.
# Extra arguments are passed to `cargo test` (e.g. scripts/test.sh -- --nocapture).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
cd "$(repo_root)"

section() { printf '\n========== %s ==========\n' "$*"; }

section "packages"
# The browser tests need Node.js, npm and Debian's Chromium (checked by command: NodeSource's
# nodejs conflicts with Debian's npm package).
browser_pkgs=()
command -v node >/dev/null 2>&1 || browser_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || browser_pkgs+=(npm)
[[ -x /usr/bin/chromium ]] || browser_pkgs+=(chromium)
ensure_packages "${browser_pkgs[@]}"
# Make sure the PostgreSQL server binaries are reachable on PATH for the tests.
if ! command -v initdb >/dev/null 2>&1; then
    PATH="$(pg_bin):$PATH"
    export PATH
fi
echo "initdb:       $(command -v initdb)"
echo "redis-server: $(command -v redis-server)"

if ! command -v cargo >/dev/null 2>&1; then
    err "cargo not found on PATH; install Rust (https://rustup.rs) first"
    exit 1
fi
cargo --version

section "cargo clippy"
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --all-targets -- -D warnings
else
    echo "clippy is not installed (rustup component add clippy); skipping"
fi

section "cargo fmt --check"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --check
else
    echo "rustfmt is not installed (rustup component add rustfmt); skipping"
fi

section "browser test dependencies"
echo "node $(node --version), npm $(npm --version)"
npm ci --prefix tests/browser --no-audit --no-fund

section "cargo test"
cargo test --all-targets "$@"

section "all checks passed"
