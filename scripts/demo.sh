#!/usr/bin/env bash
# A demo tunnel between two network namespaces, both ends run by mpwg, over two paths
# (two "uplinks"), in duplicate mode:
#
#   mpwg-demo-a                                    mpwg-demo-b
#   mpwgdemo-a 10.100.0.1/24  == WireGuard ==>  mpwgdemo-b 10.100.0.2/24
#   veth-a     10.99.0.1/24   ---- path 1 ----  veth-b     10.99.0.2/24
#   veth-a2    10.98.0.1/24   ---- path 2 ----  veth-b2    10.98.0.2/24
#
# Both daemons are configured with wg(8) only. The demo pings across the tunnel,
# runs a 3 s iperf3 through it, then cuts path 1 silently (an nft drop, link still up)
# in the middle of a 100 packets/s ping and shows that no packet is lost, prints
# `mpwg show` and `wg show` on both sides, and removes everything it made (also when a
# step fails or you press Ctrl-C).
#
#   sudo scripts/demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."

NS_A=mpwg-demo-a NS_B=mpwg-demo-b
DEV_A=mpwgdemo-a DEV_B=mpwgdemo-b
VETH_A=veth-a VETH_B=veth-b
UNDER_A=10.99.0.1 UNDER_B=10.99.0.2
VETH_A2=veth-a2 VETH_B2=veth-b2
UNDER_A2=10.98.0.1 UNDER_B2=10.98.0.2
TUN_A=10.100.0.1 TUN_B=10.100.0.2
PORT_A=51820 PORT_B=51821

. scripts/lib.sh
need_root demo.sh "it creates network namespaces and TUN devices."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

WORK=$(mktemp -d /tmp/mpwg-demo.XXXXXX)
DAEMON_PIDS=()
IPERF_PID=

stop_pid() { # SIGTERM a process we started, wait up to 5 s, then SIGKILL
    local pid=$1 what=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    echo "+ kill -TERM $pid ($what)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "pid $pid ignored SIGTERM for 5 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    [[ -n $IPERF_PID ]] && stop_pid "$IPERF_PID" iperf3
    local pid
    for pid in "${DAEMON_PIDS[@]}"; do
        stop_pid "$pid" mpwg
    done
    if ((rc != 0)); then
        for dev in "$DEV_A" "$DEV_B"; do
            if [[ -s $WORK/$dev.log ]]; then
                echo "--- mpwg log of $dev (last 40 lines) ---"
                tail -n 40 "$WORK/$dev.log"
            fi
        done
    fi
    for ns in "$NS_A" "$NS_B"; do
        ip netns list | grep -qw "^$ns" && run ip netns del "$ns"
    done
    rm -rf "$WORK"
    if ((rc == 0)); then
        say "demo finished"
    else
        say "demo FAILED (exit $rc)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/install-deps.sh --demo

say "building mpwg (release)"
run cargo build --release --bin mpwg
BIN=$PWD/target/release/mpwg

say "creating namespaces $NS_A and $NS_B, joined by a veth pair"
for ns in "$NS_A" "$NS_B"; do
    if ip netns list | grep -qw "^$ns"; then
        echo "namespace $ns is left over from an earlier run; removing it"
        run ip netns del "$ns"
    fi
    run ip netns add "$ns"
    run ip -n "$ns" link set lo up
done
run ip -n "$NS_A" link add "$VETH_A" type veth peer name "$VETH_B" netns "$NS_B"
run ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A"
run ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B"
run ip -n "$NS_A" link set "$VETH_A" up
run ip -n "$NS_B" link set "$VETH_B" up

say "a second veth pair: path 2; a default route per path, as on a multi-WAN box"
run ip -n "$NS_A" link add "$VETH_A2" type veth peer name "$VETH_B2" netns "$NS_B"
run ip -n "$NS_A" addr add "$UNDER_A2/24" dev "$VETH_A2"
run ip -n "$NS_B" addr add "$UNDER_B2/24" dev "$VETH_B2"
run ip -n "$NS_A" link set "$VETH_A2" up
run ip -n "$NS_B" link set "$VETH_B2" up
run ip -n "$NS_A" route add default via "$UNDER_B" dev "$VETH_A" metric 1
run ip -n "$NS_A" route add default via "$UNDER_B2" dev "$VETH_A2" metric 2
run ip -n "$NS_B" route add default via "$UNDER_A" dev "$VETH_B" metric 1
run ip -n "$NS_B" route add default via "$UNDER_A2" dev "$VETH_B2" metric 2
run ip netns exec "$NS_A" "$BIN" interfaces

start_daemon() { # ns dev path1 path2
    local ns=$1 dev=$2 p1=$3 p2=$4 i
    printf '+ ip netns exec %s %s up %s --path %s --path %s -v 2>%s &\n' "$ns" "$BIN" "$dev" "$p1" "$p2" "$WORK/$dev.log"
    ip netns exec "$ns" "$BIN" up "$dev" --path "$p1" --path "$p2" -v 2>"$WORK/$dev.log" &
    DAEMON_PIDS+=("$!")
    local pid=$!
    for ((i = 0; i < 100; i++)); do
        if [[ -S /var/run/wireguard/$dev.sock ]] && wg show "$dev" >/dev/null 2>&1; then
            echo "mpwg serving $dev (pid $pid), UAPI socket /var/run/wireguard/$dev.sock"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "mpwg for $dev exited early:" >&2
            cat "$WORK/$dev.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "mpwg for $dev is not answering wg(8) after 10 s" >&2
    return 1
}

say "starting mpwg in each namespace"
start_daemon "$NS_A" "$DEV_A" "$VETH_A" "$VETH_A2"
start_daemon "$NS_B" "$DEV_B" "$VETH_B" "$VETH_B2"

say "generating keys with wg genkey / wg pubkey"
umask 077
wg genkey >"$WORK/a.key"
wg genkey >"$WORK/b.key"
PUB_A=$(wg pubkey <"$WORK/a.key")
PUB_B=$(wg pubkey <"$WORK/b.key")
echo "$DEV_A public key: $PUB_A"
echo "$DEV_B public key: $PUB_B"

say "configuring both ends with wg set"
run ip netns exec "$NS_A" wg set "$DEV_A" listen-port "$PORT_A" private-key "$WORK/a.key" \
    peer "$PUB_B" endpoint "$UNDER_B:$PORT_B" allowed-ips "$TUN_B/32"
run ip netns exec "$NS_B" wg set "$DEV_B" listen-port "$PORT_B" private-key "$WORK/b.key" \
    peer "$PUB_A" endpoint "$UNDER_A:$PORT_A" allowed-ips "$TUN_A/32"

say "addressing the tunnel devices and bringing them up"
run ip -n "$NS_A" addr add "$TUN_A/24" dev "$DEV_A"
run ip -n "$NS_B" addr add "$TUN_B/24" dev "$DEV_B"
run ip -n "$NS_A" link set "$DEV_A" up
run ip -n "$NS_B" link set "$DEV_B" up

say "ping across the tunnel, $TUN_A -> $TUN_B"
run ip netns exec "$NS_A" ping -c 3 -i 0.3 -W 2 "$TUN_B"
say "ping back, $TUN_B -> $TUN_A"
run ip netns exec "$NS_B" ping -c 3 -i 0.3 -W 2 "$TUN_A"

say "iperf3 through the tunnel for 3 s ($NS_A sends to $NS_B)"
ip netns exec "$NS_B" iperf3 -s -1 -B "$TUN_B" >"$WORK/iperf3-server.log" 2>&1 &
IPERF_PID=$!
for ((i = 0; i < 50; i++)); do
    ip netns exec "$NS_B" ss -Hltn "sport = :5201" | grep -q . && break
    sleep 0.1
done
run ip netns exec "$NS_A" iperf3 -c "$TUN_B" -t 3 -f m
wait "$IPERF_PID" 2>/dev/null || true
IPERF_PID=

say "cutting path 1 silently (nft drops everything on $VETH_A, the link stays up) for 1 s of a 100 packets/s ping"
ip netns exec "$NS_A" ping -q -c 300 -i 0.01 -W 1 "$TUN_B" >"$WORK/ping.log" 2>&1 &
PING_PID=$!
sleep 1
run ip netns exec "$NS_A" nft -f - <<NFT
table netdev mpwg_demo_cut {
  chain in { type filter hook ingress device "$VETH_A" priority 0; policy drop; }
  chain out { type filter hook egress device "$VETH_A" priority 0; policy drop; }
}
NFT
sleep 1
run ip netns exec "$NS_A" "$BIN" show "$DEV_A"
run ip netns exec "$NS_A" nft delete table netdev mpwg_demo_cut
wait "$PING_PID" || true
echo "ping during the cut: $(grep -E 'transmitted' "$WORK/ping.log")"
grep -q ' 0% packet loss' "$WORK/ping.log" || { echo "packets were lost during the cut" >&2; exit 1; }

say "mpwg show on both sides: per-path counters (wins: the path that delivered first)"
run ip netns exec "$NS_A" "$BIN" show "$DEV_A"
echo
run ip netns exec "$NS_B" "$BIN" show "$DEV_B"

say "wg show on both sides"
run ip netns exec "$NS_A" wg show "$DEV_A"
echo
run ip netns exec "$NS_B" wg show "$DEV_B"

say "stopping the daemons (SIGTERM) and removing the namespaces"
# the EXIT trap does it
