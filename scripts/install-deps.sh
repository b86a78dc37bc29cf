#!/usr/bin/env bash
# Install what the demo and the tests need, on Debian/Ubuntu. Idempotent: when
# everything is present it prints nothing and touches nothing.
#
#   wireguard-go      reference userspace peer for the interop tests
#   wireguard-tools   wg(8), the only configuration tool mpwg speaks to
#   iperf3            throughput in the demo
#   iproute2          ip netns / ip link, the lab
#   nftables          fault injection (path cuts, loss) in the lab
#   iputils-ping      ping through the tunnels
#   util-linux        setpriv, to run the daemon as an unprivileged user
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
)

missing=()
for pkg in wireguard-go wireguard-tools iperf3 iproute2 nftables iputils-ping util-linux; do
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
