#!/usr/bin/env bash
# Offline quick start: builds mirrorflow, starts the bundled Drive emulator, mirrors it into ./mirror
# with pipeline.toml, prints a summary and stops the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/mirrorflow
mkdir -p mirror
log=$(mktemp)
"$bin" emulator --listen 127.0.0.1:8700 --write-key .mirrorflow-emulator-key.json --hostile >"$log" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
grep -q "listening on" "$log" || { cat "$log"; echo "emulator did not start" >&2; exit 1; }
config=$(mktemp --suffix=.toml)
sed "s|^url = \"file:///tmp/mirrorflow-mirror\"|url = \"file://$PWD/mirror\"|; s|^credentials = \".mirrorflow-emulator-key.json\"|credentials = \"$PWD/.mirrorflow-emulator-key.json\"|; s|^dir = \".mirrorflow\"|dir = \"$PWD/.mirrorflow\"|" pipeline.toml >"$config"
set +e
"$bin" run --once "$config"
code=$?
set -e
"$bin" status "$config"
echo "mirror written to ./mirror ($(find mirror -type f | wc -l) files); exit code $code (3 = some files dead-lettered, see README)"
rm -f "$config"
