# syntax=docker/dockerfile:1

# Build stage: the release binary.
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin voice-proxy \
    && cp target/release/voice-proxy /usr/local/bin/voice-proxy

# Runtime stage: the binary alone, run as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin voice-proxy \
    && mkdir -p /var/lib/voice-proxy/spool \
    && chown -R voice-proxy:voice-proxy /var/lib/voice-proxy
COPY --from=builder /usr/local/bin/voice-proxy /usr/local/bin/voice-proxy
USER voice-proxy
ENV LISTEN_ADDR=0.0.0.0:8080 SPOOL_DIR=/var/lib/voice-proxy/spool
# The spool must outlive the container: records acknowledged during a database outage wait there.
VOLUME /var/lib/voice-proxy
EXPOSE 8080
ENTRYPOINT ["voice-proxy"]
CMD ["serve"]
