#!/bin/sh
# The compose cluster's first start (the `bootstrap` service; safe to run again): the
# certificates, then the cluster's membership once its voters are up.
set -eu
pki=/etc/orbit/pki
issue() { orbitd pki issue --dir "$pki" "$@"; }
issue --who registry:1 --host 10.61.0.11
issue --who registry:2 --host 10.61.0.12
issue --who registry:3 --host 10.61.0.13
issue --who edge:site-a --host 10.61.0.21
issue --who edge:site-b --host 10.61.0.22
issue --who edge:site-c --host 10.61.0.23
issue --who admin:ops
[ "${1:-}" = certificates ] && exit 0
admin="--ca $pki/ca.pem --cert $pki/admin-ops.pem --key $pki/admin-ops.key"
# Until node 1 answers; then once: a cluster already made is left as it is.
i=0
until status=$(orbitd registry status --at 10.61.0.11:50051 $admin 2>&1); do
  i=$((i + 1)); [ $i -lt 60 ] || { echo "node 1 never answered: $status" >&2; exit 1; }
  sleep 1
done
case "$status" in
  *"voters:   1="*) echo "cluster already made" ;;
  *) orbitd registry init --at 10.61.0.11:50051 $admin \
       1=10.61.0.11:50051 2=10.61.0.12:50051 3=10.61.0.13:50051 ;;
esac
