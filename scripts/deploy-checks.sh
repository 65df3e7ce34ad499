#!/usr/bin/env bash
# Checks what ships in deploy/: the Prometheus alerting rules (`promtool check rules`, and their unit
# tests with `promtool test rules`) and the systemd unit (`systemd-analyze verify`, with ExecStart
# pointed at the built binary and no man page lookup; any warning fails). Installs Debian's
# prometheus package (which brings promtool) when missing. Usage: scripts/deploy-checks.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:?usage: deploy-checks.sh path/to/mirrorflow}")

bash scripts/prometheus.sh install
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts.test.yaml)

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze is missing: cannot verify deploy/systemd/mirrorflow.service" >&2
  exit 1
fi
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed "s#/usr/local/bin/mirrorflow#$binary#" deploy/systemd/mirrorflow.service >"$unit_dir/mirrorflow.service"
if ! systemd-analyze verify --man=no "$unit_dir/mirrorflow.service" >"$unit_dir/out" 2>&1 || [ -s "$unit_dir/out" ]; then
  cat "$unit_dir/out" >&2
  echo "systemd-analyze verify found problems in deploy/systemd/mirrorflow.service" >&2
  exit 1
fi
echo "deploy checks: alerting rules and their tests pass, the systemd unit verifies"
