# twilio-dialogflow: build with the Rust toolchain, run on a minimal, non-root image.
#
#   docker build -t twilio-dialogflow .
#   docker run --rm -p 8080:8080 --user "$(id -u):$(id -g)"
#     -v "$PWD/.env:/app/.env:ro" -e TWILIO_ACCOUNT_SID -e TWILIO_AUTH_TOKEN -e GCP_PROJECT
#     -v "$HOME/.config/gcloud/application_default_credentials.json:/secrets/adc.json:ro"
#     -e GOOGLE_APPLICATION_CREDENTIALS=/secrets/adc.json twilio-dialogflow
#   (one command: the lines of `docker run` joined)
#
# Not `--env-file .env`: Docker keeps the quotes of a Node-style `AGENT_TYPE="ES"`, and
# the environment wins over the `.env` the bridge reads from /app. `--user` lets the
# non-root process read your 0600 credentials file. See docs/deploy-cloud-run.md,
# "Anywhere else".
#
# A `.env` in the build context is copied beside the binary (optional); variables set on
# the container (Cloud Run env vars and secrets) take precedence over it.
#
# Both stages are Debian 13 (trixie), and move together: the binary links against the
# build stage's glibc, and a runtime with an older glibc may lack the symbol versions it
# needs and refuse to start it (trixie has glibc 2.41, bookworm 2.36). distroless's
# Debian 12 images reach their end of life in September 2026 (its SUPPORT_POLICY.md);
# Debian 13's are kept until a year after Debian 14 comes out. When the next Debian
# arrives, change both tags at once.

FROM rust:1.95-trixie AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY crates crates
# The sample agent is built into the binary for `demo`; the benchmarks are targets of
# the manifest, which cargo wants to find.
COPY examples examples
COPY benches benches
RUN cargo build --release --locked --features jemalloc \
    && strip target/release/twilio-dialogflow

FROM gcr.io/distroless/cc-debian13:nonroot
# cloudbuild.yaml passes the project, as the Node sample's build did; left empty, the
# `.env` or, on Google Cloud, the metadata server names it.
ARG GCP_PROJECT=""
ENV GCP_PROJECT=${GCP_PROJECT}
WORKDIR /app
COPY --from=build /src/target/release/twilio-dialogflow /usr/local/bin/twilio-dialogflow
# README.md is always there; the globs make `.env` and `routes.yaml` optional.
# `routes.yaml` likewise, for ROUTES_FILE=routes.yaml (it holds no secrets).
COPY README.md .env* routes.yaml* /app/
ENV PORT=8080
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/usr/local/bin/twilio-dialogflow"]
CMD ["serve"]
