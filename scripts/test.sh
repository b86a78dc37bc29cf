#!/usr/bin/env bash
# Run every check and every test, as CI does: formatting, clippy, release build,
# then the unit tests and the network-namespace integration tests.
#
#   sudo scripts/test.sh [extra arguments for `cargo test`, e.g. a test name filter]
#
# Must run as root: the integration tests create network namespaces, veth pairs
# and TUN devices. Leftover test namespaces (mpwgt-*) from an earlier, killed run
# are removed first, by name.
set -euo pipefail

cd "$(dirname "$0")/.."

. scripts/lib.sh
need_root test.sh "the tests create network namespaces and TUN devices."

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
scripts/install-deps.sh

step "removing leftover test namespaces and sockets"
# Only names our tests create: namespaces mpwgt-*, mpwg-demo-*; devices mpwt*.
for ns in $(ip netns list | awk '{print $1}' | grep -E '^(mpwgt-|mpwg-demo-)' || true); do
    # A test namespace is named mpwgt-<pid>-<n> after the test process that made it:
    # while that process lives (another run, on the same machine) it is not leftover.
    pid=$(echo "$ns" | sed -n 's/^mpwgt-\([0-9]*\)-.*/\1/p')
    if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
        continue
    fi
    # Only the namespace goes: processes left in it were not started by this run,
    # and this script ends no process it did not start.
    ip netns del "$ns" && echo "removed namespace $ns"
done
shopt -s nullglob
for sock in /var/run/wireguard/mpwt*.sock; do
    # a socket nobody answers on is stale (and so is the device's control socket)
    dev=$(basename "$sock" .sock)
    if ! wg show "$dev" >/dev/null 2>&1; then
        rm -f "$sock" "/var/run/wireguard/$dev.mpwg" && echo "removed stale socket $sock"
    fi
done
shopt -u nullglob

step "module graph and shape (scripts/modgraph.py)"
python3 scripts/modgraph.py

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo build --release --examples"
cargo build --release --examples

step "cargo doc --no-deps (warnings are errors: the library's API is documented)"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps

step "cargo build --release"
cargo build --release

step "cargo test --release $*"
# The integration tests serialise their network labs themselves (one lab at a
# time per test binary), and give every namespace and device a unique name.
cargo test --release "$@"

# The network suites again, once per datapath configuration: every daemon a test
# starts gets these extra arguments (tests/common reads MPWG_TEST_ARGS). The
# hardening suite (floods, replays, reloads) ran once above: it does not exercise
# the datapath's variants.
if [[ $# -eq 0 ]]; then
    for cfg in "--cores 1 --batch 1" "--cores 1 --batch 64" "--cores 2 --batch 1" "--cores 2 --batch 64"; do
        step "network tests with mpwg up $cfg"
        MPWG_TEST_ARGS="$cfg" cargo test --release --test interop --test multipath --test datapath
    done
fi
