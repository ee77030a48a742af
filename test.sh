#!/usr/bin/env bash
# The test command. On a machine with only the Rust toolchain, installs what the tests
# use besides it, then runs every test of the workspace; its arguments go on to
# `cargo test` (`./test.sh --test it handoff::` runs one area).
#
#   ./test.sh --install-only    installs what is missing, and stops (.ci/run, before
#                               clippy: jemalloc's build script runs under clippy too)
set -euo pipefail
cd "$(dirname "$0")"

# What the tests run besides cargo: "command:Debian package". The one list of them.
needs=(
    # The shared-state tests start real servers, plain and TLS, and a real cluster
    # (`redis-cli --cluster create`; redis-cli comes with the package).
    "redis-server:redis-server"
    "redis-cli:redis-tools"
    # ... with certificates it makes.
    "openssl:openssl"
    # The fault suite floods the bridge under a low `ulimit -n`.
    "prlimit:util-linux"
    # jemalloc (feature `jemalloc`, the image's allocator) is built from source.
    "make:make"
    # Twilio's official Python library measures the Messages API stand-in, in a venv.
    "python3:python3"
    # The web phone's tests drive a real headless Chromium through WebDriver.
    "chromium:chromium"
    "chromedriver:chromium-driver"
)

install_missing() {
    local missing=() need
    for need in "${needs[@]}"; do
        command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
    done
    # Debian's python3 makes virtualenvs only with python3-venv beside it.
    if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if ! command -v python3 >/dev/null; then
        missing+=(python3-venv)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    local as=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            as=(sudo -n)
        else
            as=(unable)
        fi
    fi
    if [ "${as[*]}" = unable ] || ! command -v apt-get >/dev/null; then
        echo "The tests need these packages, which cannot be installed from here" >&2
        echo "(apt-get, as root or through sudo): ${missing[*]}" >&2
        echo "Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), then run $0 again." >&2
        exit 1
    fi
    echo "== installing ${missing[*]}"
    "${as[@]}" apt-get update -qq
    "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_missing
if [ "${1:-}" = --install-only ]; then
    exit 0
fi
exec cargo test --workspace --locked "$@"
