#!/usr/bin/env bash
# The cairn demo, end to end on a fresh machine:
#   1. build the example plugins exactly as an author would
#      (cargo build --target wasm32-wasip2 --release) and drop them into a
#      plugin directory;
#   2. start `cairn serve` on the embedded PostgreSQL (no database to set up);
#   3. enqueue the example actions and print their results — including a
#      `flaky` run that succeeds on its third attempt and a `math:divide`
#      that fails with its error payload;
#   4. stop the host with SIGTERM (graceful shutdown; the private PostgreSQL
#      stops with its last user).
# The host also serves its dashboard (`--http`, loopback only) while the
# demo runs; the last lines say where it was.
#
# Before anything is built it checks what a fresh machine may lack: the
# wasm32-wasip2 target (installed with rustup when missing: a toolchain that
# is already installed does not pick up rust-toolchain.toml's targets) and
# the PostgreSQL server binaries (it says how to get them).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "checking the machine"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)"
  rustup target add wasm32-wasip2
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
   && [ -z "${CAIRN_DATABASE_URL:-}" ]; then
  echo "error: PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian/Ubuntu: apt-get install postgresql) or set CAIRN_DATABASE_URL" >&2
  exit 1
fi
echo "wasm32-wasip2 target and PostgreSQL server binaries present"

step "building the example plugins (cargo build --target wasm32-wasip2 --release)"
# Into examples/plugins/target even when CARGO_TARGET_DIR points elsewhere
# (the test harness builds them there too).
(cd examples/plugins && cargo build --target wasm32-wasip2 --release --quiet --target-dir target)
step "building cairn"
# The whole workspace, so `cargo test --workspace` reuses the same artifacts.
cargo build --quiet --workspace
cairn="${CARGO_TARGET_DIR:-target}/debug/cairn"

# A private plugin directory and state directory (the embedded PostgreSQL's
# home). Under /tmp so that, when run as root, the unprivileged `postgres`
# user that runs the server can reach it wherever this repo is cloned.
work=$(mktemp -d /tmp/cairn-demo.XXXXXX)
chmod 755 "$work"
mkdir "$work/plugins"
export CAIRN_STATE_DIR="$work/state" CAIRN_PLUGINS="$work/plugins"
for p in greet math flaky chatty; do
  cp "examples/plugins/target/wasm32-wasip2/release/$p.wasm" "$work/plugins/"
done

serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then kill -TERM "$serve_pid"; wait "$serve_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step "cairn plugins"
"$cairn" plugins

step "cairn serve --http 127.0.0.1:0 (embedded PostgreSQL under $CAIRN_STATE_DIR; log in $work/serve.log)"
# Port 0: the kernel picks a free port; the host logs the address.
"$cairn" serve --concurrency 8 --http 127.0.0.1:0 >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 300); do
  grep -q "worker started" "$work/serve.log" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done
grep -q "worker started" "$work/serve.log" || { echo "cairn serve did not start"; cat "$work/serve.log"; exit 1; }
dashboard=$(grep -o 'dashboard at http://[^ ]*' "$work/serve.log" | head -n1 | cut -d' ' -f3)
echo "serving; dashboard at $dashboard"

enqueue() {
  echo "\$ cairn enqueue $* --wait"
  "$cairn" enqueue "$@" --wait || echo "(exit $?: the action failed)"
}
step "enqueue and wait for results"
enqueue greet:hello --args '{"name": "world"}'
enqueue math:scale --args '{"point": {"x": 1.5, "y": 2}, "factor": 3}'
enqueue math:stats --args '{"values": [3, 1, 4, 1, 5, 9]}'
enqueue chatty:chat --args '{"message": "hello from the guest"}'
step "a retried run: flaky fails twice (retryable), then succeeds on attempt 3"
enqueue flaky:succeed_after --args '{"attempts": 3}'
step "a failed run, with its error payload"
enqueue math:divide --args '{"a": 1, "b": 0}'

step "the host's log"
grep -E "worker|retrying|failed|cairn::guest" "$work/serve.log" | sed 's/^/  /' | tail -n 20

step "the queue, as an operator sees it"
"$cairn" stats
"$cairn" ls --limit 10

step "graceful shutdown (SIGTERM)"
kill -TERM "$serve_pid"
wait "$serve_pid"
echo "cairn serve exited with status $?"
serve_pid=""

step "done"
echo "The dashboard was served at $dashboard while the host ran"
echo "(run \`cairn serve --http 127.0.0.1:9090\` to keep one up; see docs/operations.md)."
