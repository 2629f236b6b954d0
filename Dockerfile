# Builds without a database: sqlx checks queries against the committed sqlx-data/ cache.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/orchestrator --create-home orchestrator
COPY --from=build /src/target/release/orchestrator /usr/local/bin/orchestrator
COPY orchestrator.example.toml /etc/orchestrator/orchestrator.example.toml
USER orchestrator
WORKDIR /var/lib/orchestrator
ENV ORCH__SERVER__LISTEN=0.0.0.0:8080 \
    ORCH__DATABASE__EMBEDDED=false
EXPOSE 8080
ENTRYPOINT ["orchestrator"]
CMD ["serve"]
