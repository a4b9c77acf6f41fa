#!/usr/bin/env bash
# The cairn demo: build the example plugins exactly as an author would, drop
# them into a plugin directory, list them, and run a few actions in the
# sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building the example plugins (cargo build --target wasm32-wasip2 --release)"
(cd examples/plugins && cargo build --target wasm32-wasip2 --release --quiet)
echo "== building cairn"
cargo build --release --quiet -p cairn
cairn=target/release/cairn

plugins=$(mktemp -d)
trap 'rm -rf "$plugins"' EXIT
for p in greet math flaky chatty; do
  cp "examples/plugins/target/wasm32-wasip2/release/$p.wasm" "$plugins/"
done

echo "== cairn plugins"
"$cairn" plugins --plugins "$plugins"

run() {
  echo "== cairn invoke $*"
  "$cairn" invoke "$@" --plugins "$plugins" || echo "(exit $?)"
}
run greet:hello --args '{"name": "world"}'
run math:scale --args '{"point": {"x": 1.5, "y": 2}, "factor": 3}'
run math:stats --args '{"values": [3, 1, 4, 1, 5, 9]}'
run math:divide --args '{"a": 1, "b": 0}'
run flaky:succeed_after --args '{"attempts": 2}' --attempt 1
run flaky:succeed_after --args '{"attempts": 2}' --attempt 2
run chatty:chat --args '{"message": "hello from the guest"}'
