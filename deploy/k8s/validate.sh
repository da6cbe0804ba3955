#!/usr/bin/env bash
# Render every overlay (deploy/k8s/overlays/*) and validate what it renders against the
# Kubernetes API's schemas, strictly (an unknown field is an error). Exit non-zero on any error.
#   deploy/k8s/validate.sh            # KUBERNETES_VERSION=1.32.0 by default
# Needs kubectl (its built-in kustomize; get-kubectl.sh installs one) or kustomize, and
# kubernetes-validate (PyPI: ~/.cache/orbit-venv/bin/pip install kubernetes-validate).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${KUBERNETES_VERSION:-1.32.0}

venv=$HOME/.cache/orbit-venv/bin
if kubectl=$(command -v kubectl || command -v "$venv/kubectl"); then
  render() { "$kubectl" kustomize "$1"; }
elif command -v kustomize >/dev/null; then
  render() { kustomize build "$1"; }
else
  echo "validate.sh: no kubectl (nor kustomize) here; deploy/k8s/get-kubectl.sh installs one" >&2
  echo "  into $venv (Debian's kubernetes-client is too old to read these overlays)" >&2
  exit 2
fi
validator=$venv/kubernetes-validate
[ -x "$validator" ] || validator=$(command -v kubernetes-validate) || {
  echo "validate.sh: kubernetes-validate is not installed: pip install kubernetes-validate" >&2
  exit 2
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
for overlay in "$here"/overlays/*/; do
  name=$(basename "$overlay")
  if ! render "$overlay" >"$out/$name.yaml"; then
    echo "FAIL $name: does not render" >&2
    failed=1
    continue
  fi
  if "$validator" --strict --quiet --kubernetes-version "$version" "$out/$name.yaml"; then
    echo "ok   $name: $(grep -c '^kind:' "$out/$name.yaml") resources valid for Kubernetes $version"
  else
    echo "FAIL $name: invalid for Kubernetes $version" >&2
    failed=1
  fi
done
exit $failed
