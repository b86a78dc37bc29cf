# shellcheck shell=bash
# The mode scenarios of scripts/bench.sh (--modes), sourced by it: it uses bench.sh's
# helpers (started, reaped, wait_pid, wait_socket, ticks, say) and its cleanup by name
# (NAMESPACES, DEVICES, PIDS), and is not meant to run alone.
#
# Per scenario, three namespaces as the tests' routed lab (tests/common/emulator.rs):
#
#   A (mpwgb-m-a)              R (mpwgb-m-r)                      B (mpwgb-m-b)
#   aP 10.79.P.1/24 --- raP 10.79.P.254    rbP 10.79.(10+P).254 --- bP 10.79.(10+P).2/24
#                            \                /
#                             emuP: the link emulator (examples/link_emulator.rs, the
#                             tests' forwarder as a process), on every path, always
#
# two paths, `tc tbf` at both ends of each (A's aP, B's bP), and six systems, each an
# mpwg pair of its own (own listen port, tunnel 10.78.K.1 <-> 10.78.K.2/24):
#   s1   path 1 alone (mpwg --path a1 / --path b1)      s2   path 2 alone
#   dup  both paths, --mode duplicate                   fo   --mode failover
#   agg  --mode aggregate                               ada  --mode adaptive
# Within a round the systems take turns, each round starting one system later. Each test
# starts its pair afresh (2 s of probes before the transfer) and ends it afterwards:
# pairs left up beside the one measured would probe the shared links while it fills
# them, and aggregate's shares follow the queueing its probes see (an aggregate pair
# kept up while the others were measured began its own test at 15/85 over 40+40).
# The best single path of a round is the better of s1 and s2 in that round; every ratio
# is to it, and to duplicate, per round (the systems are interleaved within a round),
# as median (min-max).
#
# Scenarios (ids for --modes=ID,...):
#   sym    40+40 Mbit/s
#   rate   40+8 Mbit/s
#   delay  40+40 Mbit/s, 10 ms one way on path 1 and 40 ms on path 2 (the emulator)
#   lossy  40+40 Mbit/s, 10% random loss on path 2 each way (nft numgen at the router)
#
# Test, per scenario, round and system: iperf3 TCP, 1 stream, A to B, --duration s (its
# congestion control: --cc, or the system's);
# goodput at the receiver, and A's TCP segments sent and retransmitted (OutSegs,
# RetransSegs of /proc/net/snmp in A: only iperf3 speaks TCP there); the 1-minute load
# average and the daemons' CPU time with each test. Rows in OUT/modes.tsv; the report
# (scripts/bench/modes.py) writes OUT/modes.md and OUT/modes.json.

MODE_NET=79
MODE_SCENARIOS_ALL=(sym rate delay lossy)
MODE_SYSTEMS=(s1 s2 dup fo agg ada)
declare -A MODE_SCENARIO_LABEL=(
    [sym]="symmetric, 40+40 Mbit/s"
    [rate]="asymmetric rate, 40+8 Mbit/s"
    [delay]="asymmetric delay, 40+40 Mbit/s, 10 ms + 40 ms one way"
    [lossy]="lossy, 40+40 Mbit/s, 10% loss on path 2"
)
declare -A MODE_RATES=([sym]="40 40" [rate]="40 8" [delay]="40 40" [lossy]="40 40")
declare -A MODE_EMU=([sym]="" [rate]="" [delay]="1:both:delay=10 2:both:delay=40" [lossy]="")
declare -A MODE_LABEL=([s1]="path 1 alone" [s2]="path 2 alone" [dup]=duplicate [fo]=failover
    [agg]=aggregate [ada]=adaptive)
# what each system runs: its paths, its mode
declare -A MODE_PATHS=([s1]=1 [s2]=2 [dup]="1 2" [fo]="1 2" [agg]="1 2" [ada]="1 2")
declare -A MODE_MODE=([s1]=duplicate [s2]=duplicate [dup]=duplicate [fo]=failover [agg]=aggregate
    [ada]=adaptive)

# modes_check IDS: the scenario ids of --modes=IDS (all when empty), or die
modes_check() {
    local ids=$1 s
    [[ -n $ids ]] || ids=$(tr ' ' , <<<"${MODE_SCENARIOS_ALL[*]}")
    IFS=, read -ra MODE_SCENARIOS <<<"$ids"
    for s in "${MODE_SCENARIOS[@]}"; do
        [[ -n ${MODE_SCENARIO_LABEL[$s]:-} ]] || die "--modes: unknown scenario '$s' (known: ${MODE_SCENARIOS_ALL[*]})"
    done
}

# the snmp Tcp counters OutSegs and RetransSegs of namespace NS
tcp_segs() {
    # shellcheck disable=SC2016 # an awk program
    ip netns exec "$1" awk '$1 == "Tcp:" { if (!h) { for (i = 2; i <= NF; i++) n[$i] = i; h = 1 }
        else { print $n["OutSegs"], $n["RetransSegs"]; exit } }' /proc/net/snmp
}

# mode_topology SCENARIO: namespaces, veths, routes, tc tbf, nft loss, the emulator
mode_topology() {
    local s=$1 p net=$MODE_NET rates r emu_args=()
    MNS_A=${NSP}m-a MNS_B=${NSP}m-b MNS_R=${NSP}m-r
    read -ra rates <<<"${MODE_RATES[$s]}"
    local ns
    for ns in "$MNS_A" "$MNS_B" "$MNS_R"; do
        ip netns add "$ns" && NAMESPACES+=("$ns")
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -q -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    done
    ip netns exec "$MNS_R" sysctl -q -w net.ipv4.ip_forward=1
    for p in 1 2; do
        ip -n "$MNS_A" link add "a$p" type veth peer name "ra$p" netns "$MNS_R"
        ip -n "$MNS_R" link add "rb$p" type veth peer name "b$p" netns "$MNS_B"
        ip -n "$MNS_A" addr add "10.$net.$p.1/24" dev "a$p"
        ip -n "$MNS_R" addr add "10.$net.$p.254/24" dev "ra$p"
        ip -n "$MNS_R" addr add "10.$net.$((10 + p)).254/24" dev "rb$p"
        ip -n "$MNS_B" addr add "10.$net.$((10 + p)).2/24" dev "b$p"
        for ns in "$MNS_A:a$p" "$MNS_R:ra$p" "$MNS_R:rb$p" "$MNS_B:b$p"; do
            ip -n "${ns%%:*}" link set "${ns#*:}" up
        done
        # as on a multi-WAN box: a default route per path (SO_BINDTODEVICE lookups), and
        # the far end's path-P subnet through path P
        ip -n "$MNS_A" route add default via "10.$net.$p.254" dev "a$p" metric "$p"
        ip -n "$MNS_A" route add "10.$net.$((10 + p)).0/24" via "10.$net.$p.254" dev "a$p"
        ip -n "$MNS_B" route add default via "10.$net.$((10 + p)).254" dev "b$p" metric "$p"
        ip -n "$MNS_B" route add "10.$net.$p.0/24" via "10.$net.$((10 + p)).254" dev "b$p"
        r=${rates[$((p - 1))]}
        # as the tests' tbf(): a 32 KiB burst, a 20 ms queue, on both ends of the path
        tc -n "$MNS_A" qdisc replace dev "a$p" root tbf rate "${r}mbit" burst 32kb latency 20ms
        tc -n "$MNS_B" qdisc replace dev "b$p" root tbf rate "${r}mbit" burst 32kb latency 20ms
    done
    if [[ $s == lossy ]]; then
        # 10% of path 2's packets each way, at the router's ingress (the tunnel's UDP only)
        ip netns exec "$MNS_R" nft -f - <<EOF
table netdev mpwgb_loss {
  chain ra2 { type filter hook ingress device "ra2" priority 0; policy accept; meta l4proto udp numgen random mod 100 < 10 drop; }
  chain rb2 { type filter hook ingress device "rb2" priority 0; policy accept; meta l4proto udp numgen random mod 100 < 10 drop; }
}
EOF
    fi
    [[ -n ${MODE_EMU[$s]} ]] && read -ra emu_args <<<"${MODE_EMU[$s]}"
    ip netns exec "$MNS_R" "$LINK_EMU" "$net" 2 "${emu_args[@]}" \
        </dev/null >"$WORK/emu.out" 2>"$OUT/logs/modes-$s-emulator.log" &
    MEMU_PID=$!
    started "$MEMU_PID"
    local i
    for i in {1..100}; do
        grep -q '^ready$' "$WORK/emu.out" 2>/dev/null && return 0
        running "$MEMU_PID" || break
        sleep 0.05
    done
    say "WARNING: modes, $s: the link emulator did not start (logs/modes-$s-emulator.log)"
    return 1
}

# mode_system SCENARIO SYS K: an mpwg pair over its paths, tunnel 10.78.K.0/24
mode_system() {
    local s=$1 sys=$2 k=$3 side ns dev pid p paths=() port first
    # shellcheck disable=SC2153 # PORT is bench.sh's
    port=$((PORT + k))
    read -ra paths <<<"${MODE_PATHS[$sys]}"
    first=${paths[0]}
    [[ -s $WORK/m$sys-b.key ]] || (umask 077 && wg genkey >"$WORK/m$sys-a.key" && wg genkey >"$WORK/m$sys-b.key")
    for side in a b; do
        local path_args=()
        for p in "${paths[@]}"; do path_args+=(--path "$side$p"); done
        if [[ $side == a ]]; then ns=$MNS_A; else ns=$MNS_B; fi
        dev=${DEVP}m$sys$side
        [[ " ${DEVICES[*]} " == *" $dev "* ]] || DEVICES+=("$dev")
        ip netns exec "$ns" "$MPWG" up "$dev" --listen-port "$port" --mtu 1420 --mode "${MODE_MODE[$sys]}" \
            "${path_args[@]}" "${MPWG_EXTRA[@]}" </dev/null >>"$OUT/logs/modes-$s-$sys-$side.log" 2>&1 &
        pid=$!
        started "$pid"
        wait_socket "$pid" "$dev" || { say "WARNING: modes, $s: $sys did not come up on $side"; return 1; }
        if [[ $side == a ]]; then MPID_A[$sys]=$pid; else MPID_B[$sys]=$pid; fi
    done
    # endpoints known both ways: each end's address on the system's first path
    wg set "${DEVP}m${sys}a" private-key "$WORK/m$sys-a.key" peer "$(wg pubkey <"$WORK/m$sys-b.key")" \
        allowed-ips "10.78.$k.0/24" endpoint "10.$MODE_NET.$((10 + first)).2:$port"
    wg set "${DEVP}m${sys}b" private-key "$WORK/m$sys-b.key" peer "$(wg pubkey <"$WORK/m$sys-a.key")" \
        allowed-ips "10.78.$k.0/24" endpoint "10.$MODE_NET.$first.1:$port"
    ip -n "$MNS_A" addr add "10.78.$k.1/24" dev "${DEVP}m${sys}a"
    ip -n "$MNS_B" addr add "10.78.$k.2/24" dev "${DEVP}m${sys}b"
    ip -n "$MNS_A" link set "${DEVP}m${sys}a" mtu 1420 up
    ip -n "$MNS_B" link set "${DEVP}m${sys}b" mtu 1420 up
    local i
    for i in {1..10}; do
        ip netns exec "$MNS_A" ping -n -c 1 -W 1 "10.78.$k.2" >/dev/null 2>&1 && return 0
    done
    say "WARNING: modes, $s: no ping through $sys"
    return 1
}

# mode_test SCENARIO ROUND SYS K: one TCP transfer, one row of modes.tsv
mode_test() {
    local s=$1 r=$2 sys=$3 k=$4 f spid cpid i c0 c1 g0 g1 line
    f=$OUT/raw/modes/$s-r$r-$sys
    iperf_server "$MNS_B" "10.78.$k.2" "$f.server.log"
    spid=$IPERF_PID
    read -ra g0 <<<"$(tcp_segs "$MNS_A")"
    read -ra c0 <<<"$(ticks "${MPID_A[$sys]}" "${MPID_B[$sys]}")"
    timeout $((DURATION + 20)) ip netns exec "$MNS_A" iperf3 -c "10.78.$k.2" -p "$IPERF_PORT" -t "$DURATION" \
        --connect-timeout 3000 -J -P 1 ${MODES_CC:+-C "$MODES_CC"} >"$f.json" 2>"$f.client.err" &
    cpid=$!
    started "$cpid"
    wait "$cpid" || true
    reaped "$cpid"
    read -ra c1 <<<"$(ticks "${MPID_A[$sys]}" "${MPID_B[$sys]}")"
    read -ra g1 <<<"$(tcp_segs "$MNS_A")"
    wait_pid "$spid" 30
    local cpu=-
    [[ ${c0[0]} != - && ${c1[0]} != - && ${c0[1]} != - && ${c1[1]} != - ]] &&
        cpu=$((c1[0] - c0[0] + c1[1] - c0[1]))
    # scenario round system | A's segments sent, retransmitted | daemons' CPU ticks |
    # load average (1 min) after the test
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$r" "$sys" $((g1[0] - g0[0])) $((g1[1] - g0[1])) "$cpu" \
        "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/modes.tsv"
    line=$("$PY" "$ROOT/scripts/bench/modes.py" line "$OUT" "$s" "$r" "$sys")
    say "modes $s, round $r/$ROUNDS  $(printf '%-14s' "${MODE_LABEL[$sys]}") $line"
    sleep 0.2
}

# mode_down SYS: the system's pair ended (by PID)
mode_down() {
    local pid
    for pid in "${MPID_A[$1]:-}" "${MPID_B[$1]:-}"; do
        [[ -n $pid ]] && ours "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${MPID_A[$1]:-}" "${MPID_B[$1]:-}"; do
        [[ -n $pid ]] && wait_pid "$pid" 30
    done
    unset "MPID_A[$1]" "MPID_B[$1]"
}

# mode_teardown: the scenario's daemons and emulator ended (by PID), its namespaces gone
mode_teardown() {
    local pid ns live=()
    for pid in "${MPID_A[@]}" "${MPID_B[@]}" "${MEMU_PID:-}"; do
        [[ -n $pid ]] && ours "$pid" && live+=("$pid")
    done
    for pid in "${live[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${live[@]}"; do wait_pid "$pid" 30; done
    for ns in "$MNS_A" "$MNS_B" "$MNS_R"; do
        ip netns del "$ns" 2>/dev/null
        local i
        for i in "${!NAMESPACES[@]}"; do [[ ${NAMESPACES[$i]} == "$ns" ]] && unset 'NAMESPACES[i]'; done
    done
    NAMESPACES=("${NAMESPACES[@]}")
    MPID_A=() MPID_B=() MEMU_PID=''
}

modes_run() {
    LINK_EMU=$ROOT/target/release/examples/link_emulator
    if [[ ! -x $LINK_EMU ]]; then
        say "WARNING: --modes: no target/release/examples/link_emulator (build it, or drop --no-build)"
        NOTES+=("--modes: link_emulator was not built; the mode scenarios were skipped")
        return
    fi
    cp "$LINK_EMU" "$WORK/link_emulator" && LINK_EMU=$WORK/link_emulator
    if ! has_flag '--mode'; then
        say "WARNING: --modes: this mpwg has no --mode; the mode scenarios were skipped"
        NOTES+=("--modes: this mpwg has no --mode option")
        return
    fi
    mkdir -p "$OUT/raw/modes"
    : >"$OUT/modes.tsv"
    declare -gA MPID_A MPID_B
    local s r k sys ok
    for s in "${MODE_SCENARIOS[@]}"; do
        say "modes: scenario $s (${MODE_SCENARIO_LABEL[$s]}), load average $(cut -d' ' -f1-3 /proc/loadavg)"
        ok=1
        mode_topology "$s" || ok=0
        if ((ok)); then
            local n=${#MODE_SYSTEMS[@]} j
            for ((r = 1; r <= ROUNDS; r++)); do
                # each round starts one system later, so that none is always first
                for ((j = 0; j < n; j++)); do
                    k=$(((r - 1 + j) % n + 1))
                    sys=${MODE_SYSTEMS[$((k - 1))]}
                    if mode_system "$s" "$sys" "$k"; then
                        # probes find every path's RTT and health before the transfer
                        sleep 2
                        mode_test "$s" "$r" "$sys" "$k"
                        {
                            echo "== round $r, after the test"
                            "$MPWG" show "${DEVP}m${sys}a" 2>&1
                        } >>"$OUT/logs/modes-$s-$sys-show.txt"
                    else
                        NOTES+=("--modes: $s, round $r: $sys did not come up (see logs/modes-$s-$sys-*)")
                    fi
                    mode_down "$sys"
                done
            done
        else
            NOTES+=("--modes: scenario $s could not be set up (see logs/modes-$s-*)")
        fi
        mode_teardown
    done
    NOTES+=("--modes: scenarios ${MODE_SCENARIOS[*]}; $ROUNDS rounds of ${DURATION} s of 1-stream TCP per system")
}
