#!/usr/bin/env bash
# `scripts/prometheus.sh install`: makes sure Debian's prometheus package (prometheus and promtool) is
# installed, installing it with apt-get when either binary is missing. The tests run Prometheus
# against a real mirror, and CI checks the alerting rules with promtool.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "installing Debian's prometheus package (Prometheus and promtool for the tests)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
