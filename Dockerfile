# rdp-doctor: the chat-ops bot image.
#
#   docker build -t rdp-doctor .
#   docker run --init -d --name rdp-doctor -v rdp-doctor-data:/data \
#     -e DISCORD_TOKEN -e DISCORD_GUILD_ID -e AZURE_TENANT_ID -e AZURE_CLIENT_ID \
#     -e AZURE_CLIENT_SECRET -e AZURE_SUBSCRIPTION_ID rdp-doctor
#
# .ci/run lints this file with hadolint and builds the same sources (debug profile, for the tests);
# `cargo bench --bench rdp` builds the release binary.

# ---------------------------------------------------------------------------------------------
# Builder: plain cargo. The dependencies are compiled in their own layer, against stub
# sources, so that layer is rebuilt only when Cargo.toml or Cargo.lock change.
# TLS is rustls only (no OpenSSL); ring needs the C compiler the slim image already has.
# ---------------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Cargo.toml declares the `rdp` bench, and cargo refuses a manifest whose declared target file is
# missing, even to build only the binary: a stub stands in for benches/rdp.rs (never built here).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/rdp.rs \
    && cargo build --release --locked --bin rdp-doctor \
    && rm -rf src

# commands/ and migrations/ are compiled in with include_str!. tests/ and benches/ are not needed:
# the bench stub stays for the manifest's sake, and auto-discovery finds no tests or examples
# without their directories.
COPY commands ./commands
COPY migrations ./migrations
COPY src ./src
# COPY keeps the files' own mtimes, which may be older than the stub build: touch the crate
# roots so cargo rebuilds the lib and the binary instead of reusing the stubs.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin rdp-doctor

# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="rdp-doctor" \
      org.opencontainers.image.description="Chat-ops bot that runs Microsoft's Remote Desktop troubleshooting runbook against Azure VMs" \
      org.opencontainers.image.licenses="MIT"

# ca-certificates is not version-pinned: Debian drops superseded versions from the archive
# (security updates), so a pin breaks the build, and the trust store should be the current one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rdp-doctor \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin rdp-doctor \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=builder /build/target/release/rdp-doctor /usr/local/bin/rdp-doctor
# The runbook (the binary has a built-in copy; these are for reference and for the config
# file's `runbook_dir`). Owned by root, so read-only for the bot.
COPY commands /app/commands

# Configuration. Secrets have no defaults here: pass them at run time (-e / --env-file / orchestrator secrets).
#   DISCORD_TOKEN            bot token (secret, required)
#   DISCORD_GUILD_ID         guild (server) the slash commands are registered in
#   DISCORD_API_URL          Discord API base URL, only to point the bot at a mock; unset = discord.com
#   AZURE_TENANT_ID          } service principal; without AZURE_CLIENT_SECRET: workload identity,
#   AZURE_CLIENT_ID          } then managed identity
#   AZURE_CLIENT_SECRET      (secret)
#   AZURE_SUBSCRIPTION_ID    subscription(s) searched for VMs, comma-separated
#   AZURE_AUTHORITY_HOST, AZURE_RESOURCE_MANAGER_URL, RDP_DOCTOR_CONFIG: see README
#   RDP_DOCTOR_DATABASE_URL  SQLite database; relative paths are under the WORKDIR /data
#   RUST_LOG                 log level on stderr
#   RDP_DOCTOR_METRICS_LISTEN  where `bot` serves /healthz, /readyz and /metrics (the health
#                            check below asks it); `serve` serves them on RDP_DOCTOR_LISTEN,
#                            0.0.0.0:8080 by default, the same port
ENV RDP_DOCTOR_DATABASE_URL=sqlite://rdp-doctor.db \
    RDP_DOCTOR_METRICS_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info

# Writable by the bot user only; mount a volume here to keep the database across containers.
WORKDIR /data
USER 10001:10001

EXPOSE 8080

# Ready: the database answers, Discord's gateway is connected (or the endpoint's commands are
# registered) and an ARM token can be had. `rdp-doctor probe` GETs http://127.0.0.1:8080/readyz.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["rdp-doctor", "probe", "http://127.0.0.1:8080/readyz"]

ENTRYPOINT ["rdp-doctor"]
CMD ["bot"]
