# The runner's image for users who build their own with Docker or BuildKit:
#   docker build -t podrunner:0.1.0 .
# It holds what `cargo xtask image` puts in its OCI archive (which needs no Docker): the
# release `runner` binary as the entrypoint, the CA bundle, the non-root user 65532, the state
# directory /var/lib/podrunner; no shell, no package manager.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p podrunner \
    && install -D -m 0755 target/release/runner /out/runner \
    && install -d -m 0700 /out/state

# distroless "cc": glibc and libgcc (the binary's only shared libraries), the CA bundle,
# /etc/passwd with nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/runner /usr/local/bin/runner
COPY --from=build --chown=65532:65532 /out/state /var/lib/podrunner
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/runner"]
CMD ["run", "--config", "/etc/podrunner/config.toml", "--state-dir", "/var/lib/podrunner"]
