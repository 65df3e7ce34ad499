#!/usr/bin/env bash
# The test command: makes sure a local S3 server (moto) is installable, then runs every test in release
# mode (the emulator streams GiB-sized files; release keeps the suite fast).
# Tests use MIRRORFLOW_TEST_S3_ENDPOINT when set (.ci/run starts one moto for all), else they start
# their own moto_server from .venv-s3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-s3/bin/moto_server ] && ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] into .venv-s3 (local S3 server for the tests)" >&2
  python3 -m venv .venv-s3
  .venv-s3/bin/pip install --quiet 'moto[server]'
fi
unset AWS_CA_BUNDLE
exec cargo test --release "$@"
