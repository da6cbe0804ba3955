# Orbit's image: `orbitd` and `orbitctl` on a small Debian, run by a user of their own.
#
#   docker build -t orbit .
#
# Where no image registry can be reached, build the two bases locally first and name them
# (deploy/docker/base-images.sh prints these arguments):
#
#   docker build --build-arg BUILDER=orbit-base/rust:1.95.0 \
#                --build-arg RUNTIME=orbit-base/debian:bookworm -t orbit .
#
# The image runs `orbitd` with what it is given, e.g. `run --config /etc/orbit/orbit.toml`;
# state goes under /var/lib/orbit (a volume).

ARG BUILDER=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME=docker.io/library/debian:bookworm-slim

FROM ${BUILDER} AS build
WORKDIR /src
# Symbols kept (a backtrace names functions), debug info not: a smaller image, a faster build.
ENV CARGO_PROFILE_RELEASE_DEBUG=0
# The dependencies first, in a layer of their own (the manifests, with empty sources): a
# change to Orbit's code rebuilds Orbit's crates only.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY crates/sip/Cargo.toml crates/sip/
COPY crates/media/Cargo.toml crates/media/
COPY crates/state/Cargo.toml crates/state/
COPY crates/registry/Cargo.toml crates/registry/build.rs crates/registry/
COPY crates/trace/Cargo.toml crates/trace/
COPY crates/edge/Cargo.toml crates/edge/
COPY crates/orbitd/Cargo.toml crates/orbitd/
COPY crates/bench/Cargo.toml crates/bench/
# A workspace member the image never builds: its manifest, for the workspace to load.
COPY chaos-tests/Cargo.toml chaos-tests/
RUN for c in sip media state registry trace edge; do \
      mkdir -p crates/$c/src && touch crates/$c/src/lib.rs; \
    done \
 && mkdir -p crates/orbitd/src/bin/orbitctl crates/bench/src chaos-tests/src/bin \
 && touch chaos-tests/src/lib.rs \
 && for m in crates/orbitd/src/main.rs crates/orbitd/src/bin/orbitctl/main.rs crates/bench/src/main.rs chaos-tests/src/bin/orbit-chaos.rs; do \
      echo 'fn main() {}' > $m; \
    done \
 && cargo build --release --locked -p orbitd
COPY crates crates
# Newer than the empty sources' builds, whatever times the build context had.
RUN find crates -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p orbitd \
 && mkdir /out && cp target/release/orbitd target/release/orbitctl /out/

FROM ${RUNTIME}
# Nothing beyond libc: TLS is rustls, the allocator is built in.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/orbit --shell /usr/sbin/nologin orbit \
 && mkdir -p /var/lib/orbit /etc/orbit/pki \
 && chown orbit:orbit /var/lib/orbit /etc/orbit/pki \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --from=build /out/orbitd /out/orbitctl /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/orbit
VOLUME /var/lib/orbit
# SIP (UDP and TCP), SIP over TLS, the registry's gRPC, an edge's admin gRPC, metrics.
EXPOSE 5060/udp 5060/tcp 5061/tcp 50051/tcp 7100/tcp 9464/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/orbitd"]
CMD ["--help"]
