# syntax=docker/dockerfile:1
# The image: the orchestrator binary (stripped, no debug info) on Debian slim, run as an
# unprivileged user. Builds without a database: sqlx checks queries against the committed
# sqlx-data/ cache. Dependencies are compiled in their own layer (cargo-chef), so a change to
# the project's sources rebuilds only the project.

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.77 --locked
WORKDIR /src

# The dependency recipe: changes only when Cargo.toml / Cargo.lock do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
ENV SQLX_OFFLINE=true
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --profile dist --locked --recipe-path recipe.json
COPY . .
RUN cargo build --profile dist --locked --bin orchestrator

FROM debian:bookworm-slim
# ca-certificates follows Debian's security updates; a pinned version would stop getting them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/orchestrator --create-home orchestrator
COPY --from=build /src/target/dist/orchestrator /usr/local/bin/orchestrator
COPY orchestrator.example.toml /etc/orchestrator/orchestrator.example.toml
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001
WORKDIR /var/lib/orchestrator
# A container gets its database from DATABASE_URL: no private cluster inside the image.
ENV ORCH__SERVER__LISTEN=0.0.0.0:8080 \
    ORCH__DATABASE__EMBEDDED=false
EXPOSE 8080
# The binary checks itself: the slim image has no curl, and its /bin/sh (dash) has no /dev/tcp.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["orchestrator", "healthcheck"]
ENTRYPOINT ["orchestrator"]
CMD ["serve"]
