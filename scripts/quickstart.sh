#!/usr/bin/env bash
# Offline quick start: builds mirrorflow, starts the bundled Drive emulator on a free loopback port,
# mirrors it into ./mirror with pipeline.toml, prints a summary and stops the emulator.
#   QUICKSTART_DIR   where mirror/, .mirrorflow/ and the emulator's key go (default: the checkout)
#   MIRRORFLOW_BIN   a built binary to use instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${QUICKSTART_DIR:-$repo}
if [ -n "${MIRRORFLOW_BIN:-}" ]; then
  bin=$MIRRORFLOW_BIN
else
  cargo build --release --quiet
  bin=$repo/target/release/mirrorflow
fi
mkdir -p "$out/mirror"
log=$(mktemp)
key="$out/.mirrorflow-emulator-key.json"
# Port 0: the system picks a free port (8700, the documented one, may be taken); the emulator prints it.
"$bin" emulator --listen 127.0.0.1:0 --write-key "$key" --hostile >"$log" 2>&1 &
emu=$!
config=$(mktemp --suffix=.toml)
trap 'kill $emu 2>/dev/null || true; rm -f "$log" "$config"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
grep -q "listening on" "$log" || { cat "$log"; echo "emulator did not start" >&2; exit 1; }
base=$(sed -n 's|^listening on \(http://[^ ]*\).*|\1|p' "$log" | head -1)
sed -e "s|^url = \"file:///tmp/mirrorflow-mirror\"|url = \"file://$out/mirror\"|" \
    -e "s|^credentials = \".mirrorflow-emulator-key.json\"|credentials = \"$key\"|" \
    -e "s|^dir = \".mirrorflow\"|dir = \"$out/.mirrorflow\"|" \
    -e "s|http://127.0.0.1:8700/|$base/|" \
    "$repo/pipeline.toml" >"$config"
echo "Drive emulator on $base"
set +e
"$bin" run --once "$config"
code=$?
set -e
"$bin" status "$config"
echo "mirror written to $out/mirror ($(find "$out/mirror" -type f | wc -l) files); exit code $code (3 = some files dead-lettered; files Drive will not hand over are skipped, see README)"
