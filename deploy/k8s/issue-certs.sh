#!/bin/sh
# The certificates the manifests name, issued by `orbitd pki issue` into DIR from a CA of its
# own (made there on first use; what is already there is kept, so it may run again, e.g. after
# raising EDGES). Run it where orbitd is, or in the image:
#   mkdir -p pki && docker run --rm --user "$(id -u)" -v "$PWD/pki:/pki" \
#     -v "$PWD/deploy/k8s/issue-certs.sh:/issue-certs.sh:ro" --entrypoint /bin/sh \
#     orbit:latest /issue-certs.sh /pki
# Settings (environment): NAMESPACE (orbit), CLUSTER_DOMAIN (cluster.local), VOTERS (3),
# SITES ("site-a site-b site-c"), EDGES per site (3: the autoscaler's maximum).
# Writes ca.pem (ca.key: keep it out of the cluster), registry-<id>.pem/.key (id = ordinal
# + 1, serving at the pod's DNS names), orbit-edge-<site>-<n>.pem/.key (identity
# <site>/orbit-edge-<site>-<n>, the pod's name), admin-ops.pem/.key.
set -eu
dir=${1:?usage: issue-certs.sh DIR}
ns=${NAMESPACE:-orbit} domain=${CLUSTER_DOMAIN:-cluster.local}
issue() { orbitd pki issue --dir "$dir" "$@"; }
svc=orbit-registry
i=0
while [ "$i" -lt "${VOTERS:-3}" ]; do
  pod=$svc-$i
  # Peers and edges use the full name; probes 127.0.0.1; operators any of them.
  issue --who "registry:$((i + 1))" \
    --host "$pod.$svc.$ns.svc.$domain" --host "$pod.$svc.$ns.svc" --host "$pod.$svc.$ns" \
    --host "$pod.$svc" --host "$svc.$ns.svc.$domain" --host "$svc.$ns.svc" \
    --host 127.0.0.1 --host localhost
  i=$((i + 1))
done
for site in ${SITES:-site-a site-b site-c}; do
  n=0
  while [ "$n" -lt "${EDGES:-3}" ]; do
    pod=orbit-edge-$site-$n
    # The edge's admin listener is on its node's loopback.
    issue --who "edge:$site/$pod" --name "$pod" --host 127.0.0.1 --host localhost
    n=$((n + 1))
  done
done
issue --who admin:ops
