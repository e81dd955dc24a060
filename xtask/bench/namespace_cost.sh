#!/bin/bash
# The agent's CPU time against the number of network namespaces it watches (README, Overhead).
# As root, from the repository root, after `cargo xtask build`:
#   xtask/bench/namespace_cost.sh [N] [KPO]
# runs KPO (default target/release/kpo) in a namespace of its own with a policy that only
# observes, measures its CPU time over 30 s, adds N (default 200) empty namespaces under
# /run/netns (kpo-bench-ns-1..N), measures again, and removes them.
set -u
N=${1:-200}
KPO=${2:-${CARGO_TARGET_DIR:-target}/release/kpo}
D=/tmp/kpo-bench-ns; rm -rf $D; mkdir -p $D
printf '[params."net.core.somaxconn"]\nmode = "observe"\nnamespaces = ["host"]\n' > $D/policy.toml
ip netns add kpo-bench-ns
ip netns exec kpo-bench-ns "$KPO" run --state-dir $D/state --socket $D/kpo.sock --policy $D/policy.toml > $D/ev 2> $D/err &
sleep 3
PID=$(pgrep -f "kpo run --state-dir $D/state" | head -1)
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
HZ=$(getconf CLK_TCK)
measure() { local a=$(cpu); sleep 30; local b=$(cpu); awk -v a="$a" -v b="$b" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) * 1000 / hz / 30 }'; }
sleep 7
base_ns=$(ls /run/netns | wc -l)
echo "namespaces under /run/netns: $base_ns; agent CPU ms/s: $(measure)"
for i in $(seq 1 $N); do ip netns add kpo-bench-ns-$i; done
sleep 10
echo "namespaces under /run/netns: $(ls /run/netns | wc -l); agent CPU ms/s: $(measure)"
for i in $(seq 1 $N); do ip netns del kpo-bench-ns-$i; done
kill $PID; wait; ip netns del kpo-bench-ns
rm -rf $D
