#!/usr/bin/env bash
# Install what the demo and the tests need, on Debian/Ubuntu. Idempotent: when
# everything is present it prints nothing and touches nothing.
#
#   scripts/install-deps.sh           # everything scripts/test.sh needs
#   scripts/install-deps.sh --demo    # only what scripts/demo.sh needs (no browser...)
#
#   wireguard-go      reference userspace peer for the interop tests
#   wireguard-tools   wg(8), the only configuration tool mpwg speaks to
#   iperf3            throughput in the demo
#   iproute2          ip netns / ip link, the lab
#   nftables          fault injection (path cuts, loss) in the lab
#   iputils-ping      ping through the tunnels
#   util-linux        setpriv, to run the daemon as an unprivileged user
# and for tests/operations.rs only (not with --demo):
#   chromium          headless browser for the status page test (tests/operations.rs)
#   nodejs, npm       to drive it with playwright-core (tests/browser/, npm ci)
#   dpkg              the package test installs the .deb into a scratch root
#
# and, outside apt: cargo-deb (cargo install, for scripts/package.sh) and Python's
# prometheus_client (pip, the official parser the metrics test checks /metrics with).
#
# wireguard-tools is installed with --no-install-recommends: its recommends
# pull in a kernel image.
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    echo "install-deps.sh: must run as root (try: sudo $0)" >&2
    exit 1
fi

# package -> a command it provides (checked first, so hand-installed tools count)
declare -A probe=(
    [wireguard-go]=wireguard-go
    [wireguard-tools]=wg
    [iperf3]=iperf3
    [iproute2]=ip
    [nftables]=nft
    [iputils-ping]=ping
    [util-linux]=setpriv
    [chromium]=chromium
    [nodejs]=node
    [npm]=npm
    [dpkg]=dpkg-deb
)

demo_only=0
[[ ${1:-} == --demo ]] && demo_only=1

packages=(wireguard-go wireguard-tools iperf3 iproute2 nftables iputils-ping util-linux)
((demo_only)) || packages+=(chromium nodejs npm dpkg)
missing=()
for pkg in "${packages[@]}"; do
    cmd=${probe[$pkg]}
    if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd && ! -x /sbin/$cmd ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps.sh: missing ${missing[*]} and no apt-get here; install them by hand" >&2
        exit 1
    fi
    echo "install-deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Rust toolchain is not ours to install; say how if it is missing.
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps.sh: cargo not found in PATH (${PATH})." >&2
    echo "  Install Rust with rustup (https://rustup.rs), or if you ran this through sudo," >&2
    echo "  keep your PATH: sudo env \"PATH=\$PATH\" $0" >&2
    exit 1
fi
for comp in fmt clippy; do
    if ! cargo "$comp" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            [[ $comp == fmt ]] && name=rustfmt || name=clippy
            echo "install-deps.sh: adding rustup component $name"
            rustup component add "$name" >/dev/null
        else
            echo "install-deps.sh: 'cargo $comp' is missing and rustup is not available" >&2
            exit 1
        fi
    fi
done

((demo_only)) && exit 0

# cargo-deb, for scripts/package.sh and the package test.
if ! cargo deb --version >/dev/null 2>&1; then
    echo "install-deps.sh: cargo install cargo-deb"
    cargo install cargo-deb --version 3.8.0 --locked --quiet
fi

# playwright-core (no browser download: it drives Debian's chromium), pinned by
# tests/browser/package-lock.json.
browser_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if [[ ! -f $browser_dir/node_modules/playwright-core/package.json ]]; then
    echo "install-deps.sh: npm ci in tests/browser (playwright-core)"
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# Python's prometheus_client, for the python3 first on PATH (the one the tests run).
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    echo "install-deps.sh: pip install prometheus_client"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    # Debian's own python3 refuses pip installs outside a venv (PEP 668); this box's
    # test tool goes to /usr/local, where it does not touch apt's files.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --root-user-action=ignore \
        prometheus_client
fi
