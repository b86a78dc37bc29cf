#!/usr/bin/env bash
# End-to-end benchmark of mpwg against the stock userspace WireGuard peers, side by side,
# in one run, on this machine.
#
#   sudo scripts/bench.sh [--quick] [--rounds N] [--duration S] [--cores N] [--batch N]
#                         [--out DIR] [--only ID,ID,...] [--perf[=ID,ID,...]] [--no-build]
#                         [--mpwg-args "ARGS"] [--wireguard-go PATH] [--baseline PATH]
#                         [--baseline2 PATH]
#                         [--server[=1,8,32]] [--modes[=sym,rate,delay,lossy]] [--cc ALG]
#
# Systems (ids for --only):
#   raw   raw veth, no tunnel (the kernel's part of the box's ceiling)
#   wggo  Debian's wireguard-go at both ends (0.0.20220316: no offloads; the interop peer)
#   wgn   another wireguard-go at both ends, given with --wireguard-go PATH (or the
#         environment variable MPWG_BENCH_WIREGUARD_GO), e.g. the newest release, with
#         TUN TSO/GRO and UDP GSO/GRO (`go install golang.zx2c4.com/wireguard@latest`)
#   gt    GotaTun at both ends (Mullvad's Rust fork of boringtun; cargo install, pinned)
#   bt    boringtun-cli at both ends, --threads 1 (its best setting on 2 cores)
#   bt4   boringtun-cli at both ends, its default 4 threads (full run only, or --only)
#   m1    mpwg at both ends, 1 path
#   m2    mpwg at both ends, 2 paths, duplicate mode (needs `mpwg up --path`)
#   m3    mpwg at both ends, 3 paths, duplicate mode (needs `mpwg up --path`)
#   mx    mpwg (sender) against wireguard-go (receiver)
#   b1    with --baseline PATH: another mpwg binary (e.g. built before a change), 1 path
#   b2    the same, 2 paths (duplicate): a change's before and after in one run
#   c1    with --baseline2 PATH: a second other mpwg binary, 1 path (e.g. two changes'
#   c2    befores in one run); c2: 2 paths (duplicate)
#
# Every system gets its own pair of network namespaces (mpwgb-ID-a, mpwgb-ID-b) joined
# by one veth pair per path (10.77.K.1/24 <-> 10.77.K.2/24, private, inside the
# namespaces only); the tunnel is 10.78.0.1 <-> 10.78.0.2, MTU 1420. All systems are
# set up first and stay up; each round then runs every test on every system in turn,
# so slow drift of the machine (other builds) spreads over all of them alike.
#
# Tests, per system and round (client in namespace a, server in b):
#   tcp1     iperf3 TCP, 1 stream; ping -i 0.005 through the tunnel meanwhile (RTT
#            under load, recorded in an HdrHistogram)
#   tcp4     iperf3 TCP, 4 streams
#   udp64    iperf3 UDP -b 0, 64-byte IP packets (36 B payload): packets/s received
#   udp1400  iperf3 UDP -b 0, 1400-byte IP packets (1372 B payload)
# and for every test the CPU time (utime+stime from /proc/PID/stat) of both daemons.
#
# With --server (counts of client peers, default 1,8,32): a server scenario after the
# systems, one mpwg server and N clients (mpwg and wireguard-go alternating), aggregate TCP
# goodput both ways, the server's CPU per GB, and handshakes per second
# (examples/handshake_load.rs); see server_scenario below.
#
# With --modes (scenario ids, default all): the mode scenarios of issue 12 instead of the
# systems (add --only IDS to measure systems too): two mpwg ends over two paths through
# a router with the link emulator (examples/link_emulator.rs), tc tbf on both ends of
# both paths; symmetric 40+40 Mbit/s (sym), asymmetric rate 40+8 (rate), asymmetric
# delay 10 ms + 40 ms (delay), 10% loss on one path (lossy). In each, 1-stream TCP
# goodput and retransmits of each path alone, duplicate, failover, aggregate and
# adaptive, as ratios to the best single path and to duplicate; see
# scripts/bench/modes.sh. Its report: modes.md (also at the end of results.md), modes.json.
# --cc ALG: the TCP congestion control of the mode scenarios' sender (iperf3 -C ALG, e.g.
# cubic or bbr; default the system's, net.ipv4.tcp_congestion_control).
#
# and once per round, before the systems: the crypto ceiling, one core sealing and opening
# 1420-byte packets with mpwg's session for 0.5 s each (examples/crypto_rate.rs).
#
# Every ratio is against the best anchor (wggo, wgn, gt, bt, bt4) measured in the same
# run for that figure; the spread of a ratio is the min-max of its per-round ratios
# (systems are interleaved within a round, so a round's ratio shares its machine state).
#
# Output (default target/bench/YYYYmmdd-HHMMSS/, and target/bench/latest):
#   results.md    markdown tables: medians (min-max), ratios to the best anchor, the
#                 box's ceiling, goals
#   results.json  everything, per round; results.csv the same, flat
#   chart.png     goodput and CPU per GB for each system
#   raw/          iperf3 JSON and ping logs of every test; logs/ the daemons' output
#   perf-ID.txt   with --perf: `perf record -e cpu-clock -g -a` of a 1-stream TCP test
#                 through m1, wgn and gt (or the systems named), with its perf-ID.data
#
# --quick: 2 rounds of 2 s per test (under 3 minutes); default: 5 rounds of 4 s
# (under 15 minutes). --cores and --batch are handed to `mpwg up` when it knows them;
# --mpwg-args adds any other options to every `mpwg up` (e.g. "--io syscalls").
# Needs root. Installs what is missing (apt: iperf3 wireguard-go wireguard-tools;
# cargo install boringtun-cli and gotatun-cli, pinned; a Python venv with hdrhistogram
# and matplotlib).
# Everything it creates (namespaces, daemons, sockets) is removed on exit, even on failure.
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=$ROOT/scripts/bench/report.py
BT_VERSION=0.7.1
CACHE=${MPWG_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mpwg-bench}
BT=$CACHE/boringtun-cli-$BT_VERSION/bin/boringtun-cli
GT_VERSION=0.10.2
GT=$CACHE/gotatun-cli-$GT_VERSION/bin/gotatun
WGN=${MPWG_BENCH_WIREGUARD_GO:-}
BASE=''
BASE2=''
SERVER_PEERS=''
MODES=''
MODES_CC=''
VENV=$CACHE/venv
NSP=mpwgb-          # prefix of every namespace this script creates
DEVP=mpb            # prefix of every tunnel device (and /var/run/wireguard socket)
PORT=51820
IPERF_PORT=5201
PING_INTERVAL=0.005

die() { echo "bench.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

MPWG_ARGS=''
QUICK=0 ROUNDS='' DURATION='' CORES='' BATCH='' OUTDIR='' ONLY='' PERF=0 PERF_IDS=m1,wgn,gt NO_BUILD=0
ARGS=("$@")
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
        --rounds=*) ROUNDS=${1#*=} ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --duration=*) DURATION=${1#*=} ;;
        --cores) CORES=${2:?--cores needs a number}; shift ;;
        --cores=*) CORES=${1#*=} ;;
        --batch) BATCH=${2:?--batch needs a number}; shift ;;
        --batch=*) BATCH=${1#*=} ;;
        --out) OUTDIR=${2:?--out needs a directory}; shift ;;
        --out=*) OUTDIR=${1#*=} ;;
        --only) ONLY=${2:?--only needs ids}; shift ;;
        --only=*) ONLY=${1#*=} ;;
        --mpwg-args) MPWG_ARGS=${2?--mpwg-args needs a string}; shift ;;
        --mpwg-args=*) MPWG_ARGS=${1#*=} ;;
        --perf) PERF=1 ;;
        --perf=*) PERF=1 PERF_IDS=${1#*=} ;;
        --no-build) NO_BUILD=1 ;;
        --wireguard-go) WGN=${2:?--wireguard-go needs the path of a wireguard-go binary}; shift ;;
        --wireguard-go=*) WGN=${1#*=} ;;
        --baseline) BASE=${2:?--baseline needs the path of an mpwg binary}; shift ;;
        --baseline=*) BASE=${1#*=} ;;
        --baseline2) BASE2=${2:?--baseline2 needs the path of an mpwg binary}; shift ;;
        --baseline2=*) BASE2=${1#*=} ;;
        --server) SERVER_PEERS=1,8,32 ;;
        --server=*) SERVER_PEERS=${1#*=} ;;
        --modes) MODES=all ;;
        --modes=*) MODES=${1#*=} ;;
        --cc) MODES_CC=${2:?--cc needs a congestion control, e.g. cubic}; shift ;;
        --cc=*) MODES_CC=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
for v in ROUNDS DURATION CORES BATCH; do
    [[ -z ${!v} || ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} takes a positive whole number, not '${!v}'"
done
if ((QUICK)); then
    ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-2}
else
    ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-4}
fi
((DURATION >= 2)) || die "--duration must be at least 2 s"
if [[ -n $SERVER_PEERS ]]; then
    [[ $SERVER_PEERS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--server=N,N,...: counts of client peers, not '$SERVER_PEERS'"
    for n in ${SERVER_PEERS//,/ }; do ((n <= 99)) || die "--server: at most 99 client peers"; done
fi
# shellcheck source=scripts/bench/modes.sh
source "$ROOT/scripts/bench/modes.sh"
[[ -z $MODES ]] || modes_check "${MODES#all}"
if [[ -n $MODES_CC ]]; then
    [[ -n $MODES ]] || die "--cc sets the mode scenarios' congestion control: use it with --modes"
    grep -qw -- "$MODES_CC" /proc/sys/net/ipv4/tcp_available_congestion_control ||
        die "--cc $MODES_CC: not available here (available: $(cat /proc/sys/net/ipv4/tcp_available_congestion_control))"
fi
if [[ -n $BASE ]]; then
    [[ -x $BASE ]] || die "--baseline $BASE: not an executable file"
fi
if [[ -n $BASE2 ]]; then
    [[ -x $BASE2 ]] || die "--baseline2 $BASE2: not an executable file"
fi
if [[ -n $WGN ]]; then
    [[ -x $WGN ]] || die "--wireguard-go $WGN: not an executable file"
    WGN=$(realpath "$WGN")
fi
[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, TUN devices): try sudo $0 ${ARGS[*]}"

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
say() { printf '[%6ss] %s\n' "$(elapsed)" "$*"; }

# One run at a time on this machine: the namespaces and device names are fixed.
mkdir -p "$ROOT/target/bench"
exec 9>"$ROOT/target/bench/.lock"
flock -n 9 || die "another bench.sh is running (lock $ROOT/target/bench/.lock)"

# ------------------------------------------------------------------ cleanup

PIDS=()           # every process this run started and has not reaped yet, by PID
NAMESPACES=()     # every namespace this run created, by name
DEVICES=()        # every tunnel device name (for /var/run/wireguard/NAME.sock)
WORK=$(mktemp -d /tmp/mpwg-bench.XXXXXX)

# ours PID: still a child of this shell (so never a recycled PID of someone else's);
# running PID: ours, and not yet exited
ours() {
    local s
    read -r s 2>/dev/null <"/proc/$1/stat" || return 1
    s=${s##*) }
    [[ ${s#* } == "$$ "* ]]
}
running() {
    local s
    read -r s 2>/dev/null <"/proc/$1/stat" || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z && ${s#* } == "$$ "* ]]
}

cleanup() {
    local rc=$? pid ns dev i
    trap - EXIT INT TERM
    set +e
    local live=()
    for pid in "${PIDS[@]}"; do ours "$pid" && live+=("$pid"); done
    for pid in "${live[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for i in {1..30}; do
        local alive=0
        for pid in "${live[@]}"; do running "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${live[@]}"; do ours "$pid" && kill -KILL "$pid" 2>/dev/null; done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    for dev in "${DEVICES[@]}"; do rm -f "/var/run/wireguard/$dev.sock"; done
    rm -rf "$WORK"
    if ((rc != 0)); then echo "bench.sh: stopped (status $rc); namespaces and daemons removed" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started() { PIDS+=("$1"); }
# iperf_server NS ADDR LOG: a one-shot iperf3 server on ADDR:$IPERF_PORT in NS, its PID
# in IPERF_PID (and ours to end), returning once it listens (2 s at most)
iperf_server() {
    local i
    ip netns exec "$1" iperf3 -s -1 -B "$2" -p "$IPERF_PORT" >"$3" 2>&1 &
    IPERF_PID=$!
    started "$IPERF_PID"
    for i in {1..100}; do
        ip netns exec "$1" ss -Hltn "sport = :$IPERF_PORT" 2>/dev/null | grep -q . && break
        sleep 0.02
    done
}
reaped() { # PID: waited for, so no longer ours to signal
    local i
    for i in "${!PIDS[@]}"; do [[ ${PIDS[$i]} == "$1" ]] && unset 'PIDS[i]'; done
    PIDS=("${PIDS[@]}")
}

# Leftovers of an earlier run that was killed before its trap ran: processes inside
# our namespaces (named mpwgb-*), then the namespaces, then sockets of our devices.
remove_leftovers() {
    local ns pid sock
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NSP" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 0.3
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" && say "removed leftover namespace $ns"
    done
    for sock in /var/run/wireguard/"$DEVP"*.sock; do
        wg show "$(basename "$sock" .sock)" >/dev/null 2>&1 || rm -f "$sock"
    done
}

# ------------------------------------------------------------------ tools

if ! command -v cargo >/dev/null 2>&1 && [[ -n ${SUDO_USER:-} ]]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [[ -x $user_home/.cargo/bin/cargo ]]; then
        export PATH="$user_home/.cargo/bin:$PATH"
        export CARGO_HOME=${CARGO_HOME:-$user_home/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$user_home/.rustup}
    fi
fi

install_tools() {
    local missing=() pkg cmd
    declare -A probe=([iperf3]=iperf3 [wireguard-go]=wireguard-go [wireguard-tools]=wg
        [iputils-ping]=ping [iproute2]=ip [util-linux]=flock [procps]=ps)
    for pkg in "${!probe[@]}"; do
        cmd=${probe[$pkg]}
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd || -x /sbin/$cmd ]] || missing+=("$pkg")
    done
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    if ((PERF)) && ! perf --version >/dev/null 2>&1; then missing+=(linux-perf); fi
    if ((${#missing[@]})); then
        command -v apt-get >/dev/null || die "missing ${missing[*]}; install them by hand"
        say "installing ${missing[*]} (apt, --no-install-recommends)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [[ ! -x $BT ]]; then
        say "installing boringtun-cli $BT_VERSION with cargo install (a few minutes, once)"
        cargo install boringtun-cli --version "$BT_VERSION" --locked --root "$CACHE/boringtun-cli-$BT_VERSION" \
            >"$CACHE/boringtun-install.log" 2>&1 ||
            say "WARNING: cargo install boringtun-cli failed (see $CACHE/boringtun-install.log); boringtun rows will say so"
    fi
    if [[ ! -x $GT ]]; then
        say "installing gotatun-cli $GT_VERSION with cargo install (a few minutes, once)"
        cargo install gotatun-cli --version "$GT_VERSION" --locked --root "$CACHE/gotatun-cli-$GT_VERSION" \
            >"$CACHE/gotatun-install.log" 2>&1 ||
            say "WARNING: cargo install gotatun-cli failed (see $CACHE/gotatun-install.log); GotaTun rows will say so"
    fi
    if ! "$VENV/bin/python" -c 'import hdrh, matplotlib' 2>/dev/null; then
        say "making a Python venv for the report (hdrhistogram, matplotlib) in $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "hdrhistogram==0.10.*" "matplotlib>=3.7,<4"
    fi
}

mkdir -p "$CACHE"
install_tools
PY=$VENV/bin/python

# ------------------------------------------------------------------ mpwg binary

BUILD_STATE="skipped (--no-build)"
if ((!NO_BUILD)); then
    BUILD_STATE="cargo build --release"
    say "cargo build --release"
    if ! (cd "$ROOT" && cargo build --release --quiet --bin mpwg --example crypto_rate --example handshake_load \
        --example link_emulator); then
        [[ -x $ROOT/target/release/mpwg ]] || die "cargo build failed and there is no target/release/mpwg"
        say "WARNING: cargo build failed; measuring the existing target/release/mpwg"
        BUILD_NOTE="cargo build failed at the start of the run: the existing target/release/mpwg was measured"
        BUILD_STATE="cargo build failed: existing binary measured"
    fi
fi
[[ -x $ROOT/target/release/mpwg ]] || die "no target/release/mpwg (build it, or drop --no-build)"
# A private copy: another build may replace target/release/mpwg while this runs.
MPWG=$WORK/mpwg
cp "$ROOT/target/release/mpwg" "$MPWG"
touch -r "$ROOT/target/release/mpwg" "$MPWG"
MPWG_BUILT_FROM=$MPWG
MPWG_BASE=''
if [[ -n $BASE ]]; then
    MPWG_BASE=$WORK/mpwg-baseline
    cp "$BASE" "$MPWG_BASE"
fi
MPWG_BASE2=''
if [[ -n $BASE2 ]]; then
    MPWG_BASE2=$WORK/mpwg-baseline2
    cp "$BASE2" "$MPWG_BASE2"
fi
CRYPTO_RATE=''
if [[ -x $ROOT/target/release/examples/crypto_rate ]]; then
    CRYPTO_RATE=$WORK/crypto_rate
    cp "$ROOT/target/release/examples/crypto_rate" "$CRYPTO_RATE"
fi
# what the copy was built from, as of now (other people commit while this runs)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=0
[[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] && GIT_DIRTY=1
MPWG_HELP=$("$MPWG" up --help 2>&1 || true)
has_flag() { grep -q -- "$1" <<<"$MPWG_HELP"; }
HAS_PATHS=0
has_flag '--path' && HAS_PATHS=1
MPWG_EXTRA=()
NOTES=()
pass_through() { # FLAG VALUE: hand --FLAG VALUE to mpwg up if it knows it
    [[ -n $2 ]] || return 0
    if has_flag "--$1"; then
        MPWG_EXTRA+=("--$1" "$2")
    else
        say "WARNING: this mpwg has no --$1: --$1 $2 is ignored"
        NOTES+=("--$1 $2 was asked for, but this mpwg has no --$1: ignored")
    fi
}
pass_through cores "$CORES"
pass_through batch "$BATCH"
if [[ -n $MPWG_ARGS ]]; then
    read -ra extra <<<"$MPWG_ARGS"
    MPWG_EXTRA+=("${extra[@]}")
fi

# ------------------------------------------------------------------ output

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUTDIR:-$ROOT/target/bench/$STAMP}
mkdir -p "$OUT/raw" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
[[ -n $OUTDIR ]] || ln -sfn "$STAMP" "$ROOT/target/bench/latest"
: >"$OUT/cpu.tsv"
: >"$OUT/configs.tsv"
: >"$OUT/crypto.tsv"

remove_leftovers

# ------------------------------------------------------------------ systems

WGGO_VERSION=$(wireguard-go --version 2>/dev/null | awk 'NR == 1 {print $2}')
WGN_VERSION=''
[[ -n $WGN ]] && WGN_VERSION=$("$WGN" --version 2>/dev/null | awk 'NR == 1 {print $2}')
declare -A LABEL=(
    [raw]="raw veth (no tunnel)"
    [wggo]="wireguard-go ${WGGO_VERSION#v} (Debian) ×2"
    [wgn]="wireguard-go ${WGN_VERSION#v} ×2"
    [gt]="GotaTun $GT_VERSION ×2"
    [bt]="boringtun-cli ×2, 1 thread"
    [bt4]="boringtun-cli ×2, 4 threads (default)"
    [m1]="mpwg ×2, 1 path"
    [m2]="mpwg ×2, 2 paths (duplicate)"
    [m3]="mpwg ×2, 3 paths (duplicate)"
    [mx]="mpwg → wireguard-go"
    [b1]="mpwg baseline ×2, 1 path"
    [b2]="mpwg baseline ×2, 2 paths (duplicate)"
    [c1]="mpwg baseline 2 ×2, 1 path"
    [c2]="mpwg baseline 2 ×2, 2 paths (duplicate)"
)
declare -A SIDE_A=([raw]=none [wggo]=wggo [wgn]=wgn [gt]=gt [bt]=bt [bt4]=bt4 [m1]=mpwg [m2]=mpwg [m3]=mpwg [mx]=mpwg [b1]=mpwgb [b2]=mpwgb [c1]=mpwgc [c2]=mpwgc)
declare -A SIDE_B=([raw]=none [wggo]=wggo [wgn]=wgn [gt]=gt [bt]=bt [bt4]=bt4 [m1]=mpwg [m2]=mpwg [m3]=mpwg [mx]=wggo [b1]=mpwgb [b2]=mpwgb [c1]=mpwgc [c2]=mpwgc)
declare -A NPATHS=([raw]=1 [wggo]=1 [wgn]=1 [gt]=1 [bt]=1 [bt4]=1 [m1]=1 [m2]=2 [m3]=3 [mx]=1 [b1]=1 [b2]=2 [c1]=1 [c2]=2)
ALL_IDS=(raw wggo wgn gt bt bt4 m1 m2 m3 mx b1 b2 c1 c2)
if [[ -n $ONLY ]]; then
    IFS=, read -ra IDS <<<"$ONLY"
    for id in "${IDS[@]}"; do [[ -n ${LABEL[$id]:-} ]] || die "--only: unknown system '$id' (known: ${ALL_IDS[*]})"; done
elif [[ -n $MODES ]]; then
    IDS=()
elif ((QUICK)); then
    IDS=(raw wggo wgn gt bt m1 m2 m3 mx)
else
    IDS=("${ALL_IDS[@]}")
fi
# systems whose binary was not given have no row (a note says how to add one)
kept=()
for id in "${IDS[@]}"; do
    [[ $id == wgn && -z $WGN ]] && continue
    [[ $id == b[12] && -z $BASE ]] && continue
    [[ $id == c[12] && -z $BASE2 ]] && continue
    kept+=("$id")
done
IDS=("${kept[@]}")

declare -A STATUS NOTE PID_A PID_B
ns_a() { echo "$NSP$1-a"; }
ns_b() { echo "$NSP$1-b"; }
server_addr() { if [[ $1 == raw ]]; then echo 10.77.1.2; else echo 10.78.0.2; fi; }

# start_daemon KIND NS DEV ID SIDE NPATHS -> LAST_PID
start_daemon() {
    local kind=$1 ns=$2 dev=$3 id=$4 side=$5 npaths=$6 log k
    log=$OUT/logs/$id-$side-$kind.log
    local path_args=()
    if [[ $kind == mpwg* ]] && ((HAS_PATHS)) && [[ $id != mx ]]; then
        for ((k = 1; k <= npaths; k++)); do path_args+=(--path "p$k"); done
    fi
    case $kind in
        mpwg | mpwgb | mpwgc)
            local bin=$MPWG
            [[ $kind == mpwgb ]] && bin=$MPWG_BASE
            [[ $kind == mpwgc ]] && bin=$MPWG_BASE2
            ip netns exec "$ns" "$bin" up "$dev" --listen-port "$PORT" --mtu 1420 \
                "${path_args[@]}" "${MPWG_EXTRA[@]}" </dev/null >"$log" 2>&1 &
            ;;
        wggo | wgn)
            local bin=wireguard-go
            [[ $kind == wgn ]] && bin=$WGN
            ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error \
                "$bin" -f "$dev" </dev/null >"$log" 2>&1 &
            ;;
        gt)
            ip netns exec "$ns" env WG_SUDO=1 "$GT" "$dev" --foreground --disable-drop-privileges \
                --verbosity error --log "$OUT/logs/$id-$side-gt.file.log" </dev/null >"$log" 2>&1 &
            ;;
        bt | bt4)
            local threads=1
            [[ $kind == bt4 ]] && threads=4
            ip netns exec "$ns" env WG_SUDO=1 "$BT" "$dev" --foreground --disable-drop-privileges \
                --threads "$threads" --verbosity error </dev/null >"$log" 2>&1 &
            ;;
    esac
    LAST_PID=$!
    started "$LAST_PID"
}

wait_socket() { # PID DEV
    local i
    for i in {1..100}; do
        kill -0 "$1" 2>/dev/null || return 1
        [[ -S /var/run/wireguard/$2.sock ]] && wg show "$2" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}

# setup ID: namespaces, paths, daemons, keys, addresses, first handshake.
setup() {
    local id=$1 nsa nsb k np=${NPATHS[$1]} side kind ns dev pid
    nsa=$(ns_a "$id") nsb=$(ns_b "$id")
    if [[ ${SIDE_A[$id]} == bt* && ! -x $BT ]]; then
        STATUS[$id]=unavailable NOTE[$id]="boringtun-cli $BT_VERSION is not installed"
        return
    fi
    if [[ ${SIDE_A[$id]} == gt && ! -x $GT ]]; then
        STATUS[$id]=unavailable NOTE[$id]="gotatun-cli $GT_VERSION is not installed"
        return
    fi
    if ((np > 1 && !HAS_PATHS)); then
        STATUS[$id]=unavailable NOTE[$id]="this mpwg has no --path option yet"
        return
    fi
    ip netns add "$nsa" && NAMESPACES+=("$nsa")
    ip netns add "$nsb" && NAMESPACES+=("$nsb")
    ip -n "$nsa" link set lo up
    ip -n "$nsb" link set lo up
    for ((k = 1; k <= np; k++)); do
        ip -n "$nsa" link add "p$k" type veth peer name "p$k" netns "$nsb"
        ip -n "$nsa" addr add "10.77.$k.1/24" dev "p$k"
        ip -n "$nsb" addr add "10.77.$k.2/24" dev "p$k"
        ip -n "$nsa" link set "p$k" up
        ip -n "$nsb" link set "p$k" up
        if ((np > 1)); then
            # as on a multi-WAN box: SO_BINDTODEVICE route lookups need a route per path
            ip -n "$nsa" route add default via "10.77.$k.2" dev "p$k" metric "$k"
            ip -n "$nsb" route add default via "10.77.$k.1" dev "p$k" metric "$k"
        fi
    done
    if [[ $id == raw ]]; then
        STATUS[$id]=ok NOTE[$id]="" PID_A[$id]="" PID_B[$id]=""
        return
    fi
    (umask 077 && wg genkey >"$WORK/$id-a.key" && wg genkey >"$WORK/$id-b.key")
    for side in a b; do
        if [[ $side == a ]]; then kind=${SIDE_A[$id]} ns=$nsa; else kind=${SIDE_B[$id]} ns=$nsb; fi
        dev=$DEVP$id$side
        DEVICES+=("$dev")
        start_daemon "$kind" "$ns" "$dev" "$id" "$side" "$np"
        pid=$LAST_PID
        if ! wait_socket "$pid" "$dev"; then
            STATUS[$id]=failed NOTE[$id]="$kind did not come up in $ns (see logs/$id-$side-$kind.log)"
            return
        fi
        if [[ $side == a ]]; then PID_A[$id]=$pid; else PID_B[$id]=$pid; fi
    done
    for side in a b; do
        local other=b me=1 them=2
        [[ $side == b ]] && other=a me=2 them=1
        dev=$DEVP$id$side
        if [[ $side == a ]]; then ns=$nsa kind=${SIDE_A[$id]}; else ns=$nsb kind=${SIDE_B[$id]}; fi
        local lp=(listen-port "$PORT")
        [[ $kind == mpwg* ]] && lp=()
        if ! wg set "$dev" private-key "$WORK/$id-$side.key" "${lp[@]}" \
            peer "$(wg pubkey <"$WORK/$id-$other.key")" allowed-ips 10.78.0.0/24 \
            endpoint "10.77.1.$them:$PORT" 2>>"$OUT/logs/$id-$side-$kind.log"; then
            STATUS[$id]=failed NOTE[$id]="wg set failed on $kind (see logs/$id-$side-$kind.log)"
            return
        fi
        ip -n "$ns" addr add "10.78.0.$me/24" dev "$dev"
        ip -n "$ns" link set "$dev" mtu 1420 up
    done
    for k in {1..10}; do
        if ip netns exec "$nsa" ping -n -c 1 -W 1 10.78.0.2 >/dev/null 2>&1; then
            STATUS[$id]=ok NOTE[$id]=""
            return
        fi
    done
    STATUS[$id]=failed NOTE[$id]="no ping through the tunnel after 10 tries"
}

# ticks PID...: utime+stime of each process (all its threads), in clock ticks, or -
ticks() {
    local p s f
    for p in "$@"; do
        if [[ -n $p ]] && read -r s 2>/dev/null <"/proc/$p/stat"; then
            s=${s##*) }
            read -ra f <<<"$s"
            printf '%s ' $((f[11] + f[12]))
        else
            printf -- '- '
        fi
    done
}

# uticks PID...: utime alone (user space, where other people's builds run)
uticks() {
    local p s f
    for p in "$@"; do
        if [[ -n $p ]] && read -r s 2>/dev/null <"/proc/$p/stat"; then
            s=${s##*) }
            read -ra f <<<"$s"
            printf '%s ' "${f[11]}"
        else
            printf -- '- '
        fi
    done
}

# busy ticks of the whole machine, all CPUs: user, nice, system, irq, softirq
# (/proc/stat); then user and nice alone
box_ticks() {
    local _ user nice sys irq softirq
    read -r _ user nice sys _ _ irq softirq _ </proc/stat
    echo "$((user + nice + sys + irq + softirq)) $((user + nice))"
}

# CPU ticks of the ksoftirqd threads: network work the kernel defers out of the
# daemons' own context when it falls behind
SOFTIRQD=$(pgrep '^ksoftirqd/' | tr '\n' ' ')
softirqd_ticks() {
    local sum=0 t
    # shellcheck disable=SC2086 # one PID per word
    for t in $(ticks $SOFTIRQD); do [[ $t == - ]] || sum=$((sum + t)); done
    echo "$sum"
}

wait_pid() { # PID TIMEOUT_TENTHS: wait for our child, end it if it is still there
    local i
    for ((i = 0; i < $2; i++)); do
        running "$1" || break
        sleep 0.1
    done
    ours "$1" && kill -TERM "$1" 2>/dev/null
    wait "$1" 2>/dev/null || true
    reaped "$1"
}

# run_test ID ROUND TEST
run_test() {
    local id=$1 r=$2 t=$3 nsa nsb addr f spid cpid ppid i c0 c1 args=() line
    nsa=$(ns_a "$id") nsb=$(ns_b "$id") addr=$(server_addr "$id")
    f=$OUT/raw/$id/r$r-$t
    mkdir -p "$OUT/raw/$id"
    case $t in
        tcp1) args=(-P 1) ;;
        tcp4) args=(-P 4) ;;
        udp64) args=(-u -b 0 -l 36) ;;
        udp1400) args=(-u -b 0 -l 1372) ;;
    esac
    iperf_server "$nsb" "$addr" "$f.server.log"
    spid=$IPERF_PID
    read -ra c0 <<<"$(ticks "${PID_A[$id]}" "${PID_B[$id]}")"
    local box0 box1 sirq0 sirq1 u0 u1
    read -ra box0 <<<"$(box_ticks)"
    sirq0=$(softirqd_ticks)
    read -ra u0 <<<"$(uticks "${PID_A[$id]}" "${PID_B[$id]}")"
    timeout $((DURATION + 20)) ip netns exec "$nsa" iperf3 -c "$addr" -p "$IPERF_PORT" -t "$DURATION" \
        --connect-timeout 3000 -J "${args[@]}" >"$f.json" 2>"$f.client.err" &
    cpid=$!
    started "$cpid"
    if [[ $t == tcp1 ]]; then
        sleep 0.3
        local count
        count=$(awk -v d="$DURATION" -v i="$PING_INTERVAL" 'BEGIN{printf "%d", (d - 0.6) / i}')
        ip netns exec "$nsa" ping -n -i "$PING_INTERVAL" -c "$count" -W 1 "$addr" >"$f.ping" 2>&1 &
        ppid=$!
        started "$ppid"
    fi
    wait "$cpid" || true
    reaped "$cpid"
    read -ra c1 <<<"$(ticks "${PID_A[$id]}" "${PID_B[$id]}")"
    read -ra box1 <<<"$(box_ticks)"
    sirq1=$(softirqd_ticks)
    read -ra u1 <<<"$(uticks "${PID_A[$id]}" "${PID_B[$id]}")"
    [[ -n ${ppid:-} ]] && wait_pid "$ppid" 30
    wait_pid "$spid" 30
    local da=- db=-
    [[ ${c0[0]} != - && ${c1[0]} != - ]] && da=$((c1[0] - c0[0]))
    [[ ${c0[1]} != - && ${c1[1]} != - ]] && db=$((c1[1] - c0[1]))
    local ua=0
    [[ ${u0[0]} != - && ${u1[0]} != - ]] && ua=$((ua + u1[0] - u0[0]))
    [[ ${u0[1]} != - && ${u1[1]} != - ]] && ua=$((ua + u1[1] - u0[1]))
    # config round test | daemon a, daemon b (utime+stime) | machine busy | ksoftirqd |
    # daemons' utime | machine user time
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$r" "$t" "$da" "$db" $((box1[0] - box0[0])) \
        $((sirq1 - sirq0)) "$ua" $((box1[1] - box0[1])) >>"$OUT/cpu.tsv"
    case $t in
        tcp*) line=$("$PY" "$HELPER" tcp "$f.json") ;;
        udp64) line=$("$PY" "$HELPER" udp "$f.json" 36) ;;
        udp1400) line=$("$PY" "$HELPER" udp "$f.json" 1372) ;;
    esac
    if [[ $da != - && $db != - && $t == tcp* ]]; then
        line+=", daemons $(awk -v a="$da" -v b="$db" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (a + b) / hz}') CPU s"
    fi
    say "round $r/$ROUNDS  $(printf '%-38s %-8s' "${LABEL[$id]}" "$t") $line"
    if [[ $t == tcp1 ]]; then
        say "round $r/$ROUNDS  $(printf '%-38s %-8s' "${LABEL[$id]}" ping) $("$PY" "$HELPER" ping "$f.ping")"
    fi
    # a daemon that died takes its system out of the remaining rounds
    for p in "${PID_A[$id]}" "${PID_B[$id]}"; do
        if [[ -n $p ]] && ! kill -0 "$p" 2>/dev/null; then
            STATUS[$id]=failed NOTE[$id]="a daemon exited during round $r, test $t (see logs/)"
            say "WARNING: ${LABEL[$id]}: ${NOTE[$id]}"
        fi
    done
    sleep 0.2
}

CLK_TCK=$(getconf CLK_TCK)

say "out: $OUT"
say "systems: ${IDS[*]}; $ROUNDS rounds x 4 tests x ${DURATION}s; mpwg paths: $( ((HAS_PATHS)) && echo yes || echo 'not available (no --path)')"
[[ -n $MODES ]] && say "mode scenarios: ${MODE_SCENARIOS[*]}; $ROUNDS rounds x ${#MODE_SYSTEMS[@]} systems x ${DURATION}s each"
say "expect about $(awk -v n="${#IDS[@]}" -v r="$ROUNDS" -v d="$DURATION" -v p="$PERF" \
    -v np="$(tr ',' ' ' <<<"$PERF_IDS" | wc -w)" -v ms="$([[ -n $MODES ]] && echo "${#MODE_SCENARIOS[@]}" || echo 0)" \
    'BEGIN{printf "%.1f", (n * r * 4 * (d + 0.6) + p * np * (d + 6) + ms * (10 + 6 * r * (d + 0.8))) / 60}') minutes"
for id in "${IDS[@]}"; do
    setup "$id"
    say "setup ${LABEL[$id]}: ${STATUS[$id]}${NOTE[$id]:+ (${NOTE[$id]})}"
done

# CPU of each daemon before the rounds: what it spends outside its own tests is
# reported (a daemon that spins while idle would skew its neighbours' figures).
declare -A IDLE0
for id in "${IDS[@]}"; do
    [[ ${STATUS[$id]} == ok && -n ${PID_A[$id]} ]] && IDLE0[$id]=$(ticks "${PID_A[$id]}" "${PID_B[$id]}")
done

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS && ${#IDS[@]}; r++)); do
    if [[ -n $CRYPTO_RATE ]]; then
        # the crypto ceiling: one core seals, then opens, 1420-byte packets
        line=$("$CRYPTO_RATE" 0.5 1420 2>/dev/null || true)
        printf '%s\t%s\n' "$r" "$line" >>"$OUT/crypto.tsv"
        say "round $r/$ROUNDS  $(printf '%-38s %-8s' "crypto ceiling, 1 core" 1420B) $line"
    fi
    for id in "${IDS[@]}"; do
        [[ ${STATUS[$id]} == ok ]] || continue
        for t in tcp1 tcp4 udp64 udp1400; do
            [[ ${STATUS[$id]} == ok ]] || break
            run_test "$id" "$r" "$t"
        done
    done
done

# idle CPU of each daemon pair: total over the rounds minus what its own tests used
for id in "${!IDLE0[@]}"; do
    read -ra i0 <<<"${IDLE0[$id]}"
    read -ra i1 <<<"$(ticks "${PID_A[$id]}" "${PID_B[$id]}")"
    [[ ${i1[0]} == - || ${i1[1]} == - ]] && continue
    used=$(awk -F'\t' -v id="$id" '$1 == id && $4 != "-" && $5 != "-" {s += $4 + $5} END {print s + 0}' "$OUT/cpu.tsv")
    idle=$(((i1[0] - i0[0]) + (i1[1] - i0[1]) - used))
    # more than 1% of a core over the whole run is worth a line
    if ((idle * 100 > $(awk -v e="$(elapsed)" -v hz="$CLK_TCK" 'BEGIN{printf "%d", e * hz}'))); then
        NOTES+=("${LABEL[$id]}: its daemons used $(awk -v t="$idle" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", t/hz}') CPU s while other systems were measured (over $(elapsed) s)")
    fi
done

# ------------------------------------------------------------------ server scenario

# perf_summary BASE WHAT [LINE]: BASE.txt from BASE.data (by thread, user/kernel, symbol)
perf_summary() {
    [[ -s $1.data ]] || return 0
    {
        echo "# perf record -e cpu-clock -F 999 -g -a -- sleep $DURATION, during $2"
        [[ -n ${3:-} ]] && echo "# $3"
        echo "# perf.data: $1.data (perf report -i FILE --no-children)"
        echo
        echo "## by thread name (comm), % of all samples on all CPUs (swapper = idle)"
        perf report -i "$1.data" --stdio --no-children -g none --sort comm \
            --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo
        echo "## by thread and user/kernel (dso)"
        perf report -i "$1.data" --stdio --no-children -g none --sort comm,dso \
            --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo
        echo "## by thread and symbol, self time, >= 0.4%"
        perf report -i "$1.data" --stdio --no-children -g none --sort comm,sym \
            --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$'
    } >"$1.txt"
    say "profile: $1.txt"
}

# --server: one mpwg server, N client peers (mpwg and wireguard-go alternating), each in
# its own namespace on its own veth to the server's (10.80.K.2 -> 10.80.K.1; tunnel
# 10.81.0.K+1 -> 10.81.0.1). For each N the server has exactly N data peers: aggregate TCP
# goodput with every client sending at once (up) and receiving at once (down, iperf3 -R),
# the server daemon's CPU per GB, then handshakes per second from N extra peers
# (examples/handshake_load.rs, in a namespace of its own), which are removed afterwards.
server_client_setup() { # K: namespace, veth, daemon, keys, first ping
    local k=$1 ns dev kind pid
    ns=${NSP}c$k dev=${DEVP}c$k
    kind=mpwg
    ((k % 2 == 0)) && kind=wggo
    ip netns add "$ns" && NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
    ip -n "$SRV_NS" link add "c$k" type veth peer name uplink netns "$ns"
    ip -n "$SRV_NS" addr add "10.80.$k.1/24" dev "c$k"
    ip -n "$ns" addr add "10.80.$k.2/24" dev uplink
    ip -n "$SRV_NS" link set "c$k" up
    ip -n "$ns" link set dev uplink up
    (umask 077 && wg genkey >"$WORK/c$k.key")
    DEVICES+=("$dev")
    if [[ $kind == mpwg ]]; then
        ip netns exec "$ns" "$MPWG" up "$dev" --listen-port "$PORT" --mtu 1420 "${MPWG_EXTRA[@]}" \
            </dev/null >"$OUT/logs/server-c$k-mpwg.log" 2>&1 &
    else
        local bin=wireguard-go
        [[ -n $WGN ]] && bin=$WGN
        ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$bin" -f "$dev" \
            </dev/null >"$OUT/logs/server-c$k-wggo.log" 2>&1 &
    fi
    pid=$!
    started "$pid"
    wait_socket "$pid" "$dev" || { say "WARNING: server scenario: client $k ($kind) did not come up"; return 1; }
    local lp=(listen-port "$PORT")
    [[ $kind == mpwg ]] && lp=()
    wg set "$dev" private-key "$WORK/c$k.key" "${lp[@]}" peer "$(wg pubkey <"$WORK/srv.key")" \
        allowed-ips 10.81.0.0/24 endpoint "10.80.$k.1:$PORT"
    ip -n "$ns" addr add "10.81.0.$((k + 1))/24" dev "$dev"
    ip -n "$ns" link set "$dev" mtu 1420 up
    wg set "$SRV_DEV" peer "$(wg pubkey <"$WORK/c$k.key")" allowed-ips "10.81.0.$((k + 1))/32"
    local i
    for i in {1..10}; do
        ip netns exec "$ns" ping -n -c 1 -W 1 10.81.0.1 >/dev/null 2>&1 && return 0
    done
    say "WARNING: server scenario: no ping through client $k ($kind)"
    return 1
}

server_tcp() { # N ROUND TEST(up|down): every client at once
    local n=$1 r=$2 t=$3 k f spids=() cpids=() rflag=() c0 c1 b0 b1
    f=$OUT/raw/server/n$n-r$r-$t
    mkdir -p "$OUT/raw/server"
    [[ $t == down ]] && rflag=(-R)
    for ((k = 1; k <= n; k++)); do
        ip netns exec "$SRV_NS" iperf3 -s -1 -B 10.81.0.1 -p $((IPERF_PORT + k)) >/dev/null 2>&1 &
        spids+=($!)
        started "$!"
    done
    for ((k = 1; k <= n; k++)); do
        local i
        for i in {1..100}; do
            ip netns exec "$SRV_NS" ss -Hltn "sport = :$((IPERF_PORT + k))" 2>/dev/null | grep -q . && break
            sleep 0.02
        done
    done
    read -ra c0 <<<"$(ticks "$SRV_PID")"
    read -ra b0 <<<"$(box_ticks)"
    for ((k = 1; k <= n; k++)); do
        timeout $((DURATION + 20)) ip netns exec "${NSP}c$k" iperf3 -c 10.81.0.1 -p $((IPERF_PORT + k)) \
            -t "$DURATION" --connect-timeout 3000 -J "${rflag[@]}" >"$f-c$k.json" 2>/dev/null &
        cpids+=($!)
        started "$!"
    done
    for k in "${cpids[@]}"; do
        wait "$k" || true
        reaped "$k"
    done
    read -ra c1 <<<"$(ticks "$SRV_PID")"
    read -ra b1 <<<"$(box_ticks)"
    for k in "${spids[@]}"; do wait_pid "$k" 30; done
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$r" "$t" $((c1[0] - c0[0])) $((b1[0] - b0[0])) $((b1[1] - b0[1])) \
        >>"$OUT/server.tsv"
    say "server, $n peers, round $r: TCP $t $("$PY" "$HELPER" server-line "$OUT" "$n" "$r" "$t")"
}

server_handshakes() { # N ROUND
    local n=$1 r=$2 k c0 c1 line
    : >"$WORK/hs-$n.keys"
    for ((k = 1; k <= n; k++)); do
        wg genkey >>"$WORK/hs-$n.keys"
    done
    while read -r key; do
        wg set "$SRV_DEV" peer "$(wg pubkey <<<"$key")"
    done <"$WORK/hs-$n.keys"
    read -ra c0 <<<"$(ticks "$SRV_PID")"
    line=$(ip netns exec "${NSP}hs" "$HS_LOAD" "10.80.200.1:$PORT" "$(wg pubkey <"$WORK/srv.key")" \
        "$DURATION" "$WORK/hs-$n.keys" 2>&1 || true)
    read -ra c1 <<<"$(ticks "$SRV_PID")"
    while read -r key; do
        wg set "$SRV_DEV" peer "$(wg pubkey <<<"$key")" remove
    done <"$WORK/hs-$n.keys"
    printf '%s\t%s\ths\t%s\t%s\n' "$n" "$r" $((c1[0] - c0[0])) "$line" >>"$OUT/server.tsv"
    say "server, $n peers, round $r: handshakes $line"
}

server_scenario() {
    SRV_NS=${NSP}srv SRV_DEV=${DEVP}srv
    HS_LOAD=$ROOT/target/release/examples/handshake_load
    if [[ ! -x $HS_LOAD ]]; then
        say "WARNING: server scenario: no target/release/examples/handshake_load (build it, or drop --no-build)"
        NOTES+=("--server: handshake_load was not built; the scenario was skipped")
        return
    fi
    cp "$HS_LOAD" "$WORK/handshake_load" && HS_LOAD=$WORK/handshake_load
    : >"$OUT/server.tsv"
    ip netns add "$SRV_NS" && NAMESPACES+=("$SRV_NS")
    ip -n "$SRV_NS" link set lo up
    ip netns add "${NSP}hs" && NAMESPACES+=("${NSP}hs")
    ip -n "${NSP}hs" link set lo up
    ip -n "$SRV_NS" link add hs type veth peer name uplink netns "${NSP}hs"
    ip -n "$SRV_NS" addr add 10.80.200.1/24 dev hs
    ip -n "${NSP}hs" addr add 10.80.200.2/24 dev uplink
    ip -n "$SRV_NS" link set hs up
    ip -n "${NSP}hs" link set dev uplink up
    (umask 077 && wg genkey >"$WORK/srv.key")
    DEVICES+=("$SRV_DEV")
    ip netns exec "$SRV_NS" "$MPWG" up "$SRV_DEV" --listen-port "$PORT" --mtu 1420 "${MPWG_EXTRA[@]}" \
        </dev/null >"$OUT/logs/server-mpwg.log" 2>&1 &
    SRV_PID=$!
    started "$SRV_PID"
    if ! wait_socket "$SRV_PID" "$SRV_DEV"; then
        say "WARNING: server scenario: the server did not come up (logs/server-mpwg.log)"
        NOTES+=("--server: the server did not come up")
        return
    fi
    wg set "$SRV_DEV" private-key "$WORK/srv.key"
    ip -n "$SRV_NS" addr add 10.81.0.1/24 dev "$SRV_DEV"
    ip -n "$SRV_NS" link set "$SRV_DEV" mtu 1420 up
    local have=0 n r k rounds=$((ROUNDS < 3 ? ROUNDS : 3))
    IFS=, read -ra counts <<<"$SERVER_PEERS"
    for n in "${counts[@]}"; do
        for ((k = have + 1; k <= n; k++)); do
            server_client_setup "$k" || { NOTES+=("--server: client $k did not come up; stopped at $have peers"); return; }
            have=$k
        done
        say "server scenario: $n peers up"
        for ((r = 1; r <= rounds; r++)); do
            server_tcp "$n" "$r" up
            server_tcp "$n" "$r" down
            server_handshakes "$n" "$r"
        done
        if ((PERF)) && perf --version >/dev/null 2>&1; then
            # a profile of the whole box while every client sends (not counted in the figures)
            perf record -q -e cpu-clock -F 999 -g -a -o "$OUT/perf-server-$n.data" -- sleep "$DURATION" \
                >/dev/null 2>&1 &
            local ppid=$!
            started "$ppid"
            server_tcp "$n" 0 up-perf
            wait "$ppid" || true
            reaped "$ppid"
            perf_summary "$OUT/perf-server-$n" "the server scenario, $n client peers sending at once"
        fi
    done
    NOTES+=("--server: $rounds rounds of ${DURATION} s per test for ${SERVER_PEERS} peers; clients alternate mpwg (odd) and $([[ -n $WGN ]] && echo "wireguard-go ${WGN_VERSION#v}" || echo "Debian's wireguard-go") (even)")
}

if [[ -n $SERVER_PEERS ]]; then
    server_scenario
fi

if [[ -n $MODES ]]; then
    modes_run
fi

# Interface and protocol counters of every system (drops on the TUN queue, UDP
# receive-buffer errors, ...): what the figures above cost, after the fact.
for id in "${IDS[@]}"; do
    [[ -n ${STATUS[$id]:-} && ${STATUS[$id]} != unavailable ]] || continue
    for ns in "$(ns_a "$id")" "$(ns_b "$id")"; do
        {
            echo "== $ns: ip -s link"
            ip -n "$ns" -s link show 2>&1
            echo "== $ns: nstat -asz (non-zero IP/UDP/TCP counters)"
            ip netns exec "$ns" nstat -asz 2>&1 | awk 'NR <= 1 || $2 != 0'
        } >>"$OUT/logs/$id-counters.txt"
    done
done

# ------------------------------------------------------------------ profiles

if ((PERF)); then
    if ! perf --version >/dev/null 2>&1; then
        say "WARNING: perf is not usable here; no profiles"
        NOTES+=("--perf: perf was not usable on this machine")
    fi
    IFS=, read -ra perf_ids <<<"$PERF_IDS"
    for id in "${perf_ids[@]}"; do
        perf --version >/dev/null 2>&1 || break
        [[ ${STATUS[$id]:-} == ok ]] || continue
        nsa=$(ns_a "$id") nsb=$(ns_b "$id")
        ip netns exec "$nsb" iperf3 -s -1 -B 10.78.0.2 -p "$IPERF_PORT" >/dev/null 2>&1 &
        spid=$!
        started "$spid"
        sleep 0.3
        ip netns exec "$nsa" iperf3 -c 10.78.0.2 -p "$IPERF_PORT" -t $((DURATION + 2)) --connect-timeout 3000 \
            >"$OUT/perf-$id.iperf.txt" 2>&1 &
        cpid=$!
        started "$cpid"
        sleep 1
        say "perf record -e cpu-clock -g -a, ${DURATION}s of 1-stream TCP through ${LABEL[$id]}"
        perf record -q -e cpu-clock -F 999 -g -a -o "$OUT/perf-$id.data" -- sleep "$DURATION" >/dev/null 2>&1 || true
        wait "$cpid" || true
        reaped "$cpid"
        wait_pid "$spid" 30
        perf_summary "$OUT/perf-$id" "iperf3 -c (1 TCP stream) through ${LABEL[$id]}" \
            "$(grep -E 'receiver' "$OUT/perf-$id.iperf.txt" | tail -1)"
    done
fi

# ------------------------------------------------------------------ report

((HAS_PATHS)) || NOTES+=("this mpwg has no --path option: the 2- and 3-path systems were not measured")
((HAS_PATHS)) && NOTES+=("mpwg systems m1/m2/m3 ran with one --path per veth (SO_BINDTODEVICE); mpwg → wireguard-go ran without --path")
NOTES+=("boringtun-cli $BT_VERSION and gotatun-cli $GT_VERSION (cargo install --locked); Debian's $(wireguard-go --version 2>/dev/null | head -1); $(iperf3 --version | head -1)")
if [[ -n $WGN ]]; then
    NOTES+=("wgn: $WGN, which says: $("$WGN" --version 2>/dev/null | head -1)")
else
    NOTES+=("no other wireguard-go was given (--wireguard-go PATH, or MPWG_BENCH_WIREGUARD_GO): Debian's 0.0.20220316 has none of the newer offloads and is no speed yardstick")
fi
[[ -n ${BUILD_NOTE:-} ]] && NOTES+=("$BUILD_NOTE")

{
    printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'command\tscripts/bench.sh'
    ((${#ARGS[@]} == 0)) || printf ' %q' "${ARGS[@]}"
    printf '\n'
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'duration\t%s\n' "$DURATION"
    if [[ -n $MODES_CC ]]; then
        printf 'modes_cc\t%s\n' "$MODES_CC"
    else
        printf 'modes_cc\t%s (the default)\n' "$(cat /proc/sys/net/ipv4/tcp_congestion_control)"
    fi
    printf 'clk_tck\t%s\n' "$CLK_TCK"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'cpu_model\t%s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'mpwg_version\t%s\n' "$("$MPWG" --version 2>/dev/null | awk '{print $2}')"
    printf 'mpwg_sha256\t%s\n' "$(sha256sum "$MPWG" | cut -c1-16)"
    # the binary can be older than HEAD (--no-build, a failed build): say when it was built
    printf 'mpwg_built\t%s\n' "$(date -u -r "$MPWG_BUILT_FROM" +%Y-%m-%dT%H:%M:%SZ)"
    printf 'build\t%s\n' "$BUILD_STATE"
    printf 'git_rev\t%s\n' "$GIT_REV"
    printf 'git_dirty\t%s\n' "$GIT_DIRTY"
    printf 'mpwg_has_paths\t%s\n' "$HAS_PATHS"
    printf 'mpwg_extra_args\t%s\n' "${MPWG_EXTRA[*]}"
    printf 'boringtun_cli\t%s\n' "$BT_VERSION"
    printf 'gotatun_cli\t%s\n' "$GT_VERSION"
    printf 'wireguard_go_debian\t%s\n' "$WGGO_VERSION"
    printf 'wireguard_go_other\t%s\n' "${WGN_VERSION:-}"
    printf 'wireguard_go_other_path\t%s\n' "${WGN:-}"
    printf 'loadavg_at_start\t%s\n' "$LOAD_AT_START"
    printf 'baseline\t%s\n' "${BASE:-}"
    [[ -n $BASE ]] && printf 'baseline_sha256\t%s\n' "$(sha256sum "$MPWG_BASE" | cut -c1-16)"
    printf 'baseline2\t%s\n' "${BASE2:-}"
    [[ -n $BASE2 ]] && printf 'baseline2_sha256\t%s\n' "$(sha256sum "$MPWG_BASE2" | cut -c1-16)"
    printf 'wall_seconds\t%s\n' "$(elapsed)"
    for n in "${NOTES[@]}"; do printf 'notes\t%s\n' "$n"; done
} >"$OUT/meta.tsv"
for id in "${IDS[@]}"; do
    has_daemon=1
    [[ $id == raw ]] && has_daemon=0
    printf '%s\t%s\t%s\t%s\t%s\n' "$id" "${LABEL[$id]}" "${STATUS[$id]}" "${NOTE[$id]}" "$has_daemon" >>"$OUT/configs.tsv"
done

if ((${#IDS[@]})); then
    "$PY" "$HELPER" final "$OUT"
else
    : >"$OUT/results.md"
fi
if [[ -n $MODES ]]; then
    "$PY" "$ROOT/scripts/bench/modes.py" final "$OUT"
    cat "$OUT/modes.md" >>"$OUT/results.md"
fi
echo
cat "$OUT/results.md"
say "done: $OUT/results.md, results.json, results.csv, chart.png"
