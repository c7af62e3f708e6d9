# The server binaries: driftless-server (API, admin commands, reconcile)
# and driftless-consumer (event-stream workers). Multi-stage: the toolchain
# and the build cache stay in the builder; the runtime image holds the two
# binaries, CA certificates and curl (for the health check).
#
#   docker build -t driftless .
#   docker compose up -d --build        # see docker-compose.yml

FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys (bundled, static).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p driftless-api -p driftless-consumer --bins \
 && mkdir -p /out \
 && cp target/release/driftless-server target/release/driftless-consumer /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/driftless --create-home driftless
COPY --from=build /out/driftless-server /out/driftless-consumer /usr/local/bin/
USER driftless
WORKDIR /var/lib/driftless
ENV DRIFTLESS_DATA_DIR=/var/lib/driftless \
    DRIFTLESS_LISTEN=0.0.0.0:8440
EXPOSE 8440
CMD ["driftless-server", "serve"]
