#!/usr/bin/env bash
# The Dockerfile's two bases, built on this machine from Debian's packages, for machines that
# reach no image registry (the tests run on such machines): a minimal Debian for the runtime
# (debootstrap --variant=minbase) and the same with gcc and this machine's Rust toolchain for
# the build. Made once; an image already there is kept. Prints the build arguments to use.
#
#   deploy/docker/base-images.sh            # -> --build-arg BUILDER=... --build-arg RUNTIME=...
set -euo pipefail
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
sysroot=$(rustc --print sysroot)
rust=$(rustc --version | cut -d' ' -f2)
runtime=orbit-base/debian:$suite
builder=orbit-base/rust:$rust
work=${XDG_CACHE_HOME:-$HOME/.cache}/orbit-base

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

# A Debian tree at $1 with the packages $2 (comma-separated; may be empty).
tree() {
  command -v debootstrap >/dev/null || {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null
  }
  as_root rm -rf "$1"
  as_root debootstrap --variant=minbase ${2:+--include="$2"} "$suite" "$1" "$mirror" >"$1.log" 2>&1 \
    || { tail -20 "$1.log" >&2; exit 1; }
  as_root rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb
}

mkdir -p "$work"
if ! have "$runtime"; then
  echo "building $runtime" >&2
  tree "$work/runtime" ""
  as_root tar -C "$work/runtime" -c . | docker import - "$runtime" >/dev/null
fi
if ! have "$builder"; then
  echo "building $builder" >&2
  tree "$work/builder" gcc,libc6-dev,ca-certificates
  # This machine's extra trust roots (an intercepting proxy's), so that cargo reaches
  # crates.io from the build as it does from here.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    as_root cp /usr/local/share/ca-certificates/*.crt "$work/builder/usr/local/share/ca-certificates/"
    as_root chroot "$work/builder" update-ca-certificates >/dev/null
  fi
  as_root mkdir -p "$work/builder/usr/local/rust"
  as_root cp -a "$sysroot/bin" "$sysroot/lib" "$work/builder/usr/local/rust/"
  as_root tar -C "$work/builder" -c . | docker import \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    - "$builder" >/dev/null
fi
echo "--build-arg BUILDER=$builder --build-arg RUNTIME=$runtime"
