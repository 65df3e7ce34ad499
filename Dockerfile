# syntax=docker/dockerfile:1
# mirrorflow's image: built from this repository with the locked dependencies, run as a non-root user
# on a small Debian. Build: docker build -t mirrorflow:0.1.0 .
# Run: docker run -v ./config:/config:ro -v mirrorflow-state:/state mirrorflow:0.1.0
# (deploy/kubernetes runs it as a StatefulSet: see README, "Run on Kubernetes").

FROM rust:1.95-bookworm AS builder
# aws-lc (rustls' crypto, the chunk path's MD5/SHA-256) builds with cmake and clang. Debian's package
# versions are not pinned: a stable release's security updates replace them, and a pin would then fail.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mirrorflow \
    && install -D -m 0755 target/release/mirrorflow /out/mirrorflow

FROM debian:bookworm-slim
# The system CA store: Google's APIs and the destination are reached over TLS with it (unpinned, as above).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 mirrorflow \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /state --shell /usr/sbin/nologin mirrorflow \
    && install -d -o 10001 -g 10001 -m 0750 /state \
    && install -d -m 0755 /config
COPY --from=builder /out/mirrorflow /usr/local/bin/mirrorflow
USER 10001:10001
WORKDIR /state
VOLUME ["/state"]
# /metrics, /healthz, /readyz ([metrics] listen = "0.0.0.0:9898").
EXPOSE 9898
ENTRYPOINT ["mirrorflow"]
CMD ["run", "/config/pipeline.toml"]
