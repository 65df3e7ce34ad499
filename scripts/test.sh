#!/usr/bin/env bash
# The test command: makes sure a local S3 server (moto) is installable and a throwaway PostgreSQL runs
# (scripts/postgres.sh installs Debian's package when missing and starts one on a free loopback port),
# then runs every unit, property and integration test in release mode (the emulator streams GiB-sized
# files; release keeps it fast). Tests use MIRRORFLOW_TEST_S3_ENDPOINT when set (.ci/run starts one
# moto for all), else they start their own moto_server from .venv-s3 or PATH; the index tests use
# MIRRORFLOW_TEST_PG_URL (each test in a database of its own), and MIRRORFLOW_TEST_PGBOUNCER_URL, a
# PgBouncer in transaction mode in front of that server (scripts/pgbouncer.sh installs Debian's
# pgbouncer when missing): the index through a pooler like Supabase's on port 6543. Debian's
# prometheus package is installed when missing (scripts/prometheus.sh): a test scrapes a real run.
set -euo pipefail
cd "$(dirname "$0")/.."
# No import circle in src/ (docs/ARCHITECTURE.md, "Who imports whom"): fails before anything is built.
python3 scripts/import_graph.py --check >/dev/null
if [ ! -x .venv-s3/bin/moto_server ] && ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] into .venv-s3 (local S3 server for the tests)" >&2
  python3 -m venv .venv-s3
  .venv-s3/bin/pip install --quiet --disable-pip-version-check 'moto[server]'
fi
unset AWS_CA_BUNDLE
# Prometheus scrapes a running mirror in the tests (tests/it/operate.rs).
bash scripts/prometheus.sh install
log=$(mktemp)
pgdir=""
bouncerdir=""
cleanup() {
  rm -f "$log"
  if [ -n "$bouncerdir" ]; then bash scripts/pgbouncer.sh stop "$bouncerdir"; rm -rf "$bouncerdir"; fi
  if [ -n "$pgdir" ]; then bash scripts/postgres.sh stop "$pgdir"; rm -rf "$pgdir"; fi
}
trap cleanup EXIT
if [ -z "${MIRRORFLOW_TEST_PG_URL:-}" ]; then
  pgdir=$(mktemp -d /tmp/mirrorflow-pg.XXXXXX)
  MIRRORFLOW_TEST_PG_URL=$(bash scripts/postgres.sh start "$pgdir")
  export MIRRORFLOW_TEST_PG_URL
  echo "PostgreSQL for the index tests: $MIRRORFLOW_TEST_PG_URL" >&2
fi
if [ -z "${MIRRORFLOW_TEST_PGBOUNCER_URL:-}" ]; then
  bouncerdir=$(mktemp -d /tmp/mirrorflow-pgbouncer.XXXXXX)
  MIRRORFLOW_TEST_PGBOUNCER_URL=$(bash scripts/pgbouncer.sh start "$bouncerdir" "$MIRRORFLOW_TEST_PG_URL")
  export MIRRORFLOW_TEST_PGBOUNCER_URL
  echo "PgBouncer (transaction mode) in front of it: $MIRRORFLOW_TEST_PGBOUNCER_URL" >&2
fi
set +e
cargo test --release --workspace --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "suite: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
