#!/bin/bash
# Does a window's energy cover the window's own span? Runs `kpo run` against an exact 1 W
# reference: a fake perf `power` PMU whose energy-psys is the software PMU's cpu-clock scaled at
# 1e-9 J/ns (one CPU's wall time in joules), bound over /sys/bus/event_source/devices in a
# private mount namespace, inside a network namespace of its own, with an empty policy (nothing
# is changed). Prints `joules - duration_s` per window, in ms: 0 when the meter is read at the
# window's edges.
#
#   sudo xtask/bench/energy_span.sh target/debug/kpo [SECONDS] [TICK] [WINDOW]
set -euo pipefail
kpo=$(readlink -f "$1")
seconds=${2:-20} tick=${3:-100ms} window=${4:-300ms}
ns=kpo-energy-span-$$
dir=$(mktemp -d /tmp/kpo-energy-span.XXXX)
trap 'ip netns del $ns 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/devs/power/events"
for e in /sys/bus/event_source/devices/*; do
    [ "$(basename "$e")" = power ] || ln -s "$(readlink -f "$e")" "$dir/devs/$(basename "$e")"
done
echo 1 > "$dir/devs/power/type"    # PERF_TYPE_SOFTWARE; config 0 is cpu-clock
echo 0 > "$dir/devs/power/cpumask"
echo "event=0x00" > "$dir/devs/power/events/energy-psys"
echo "1e-9" > "$dir/devs/power/events/energy-psys.scale"
echo Joules > "$dir/devs/power/events/energy-psys.unit"
: > "$dir/policy.toml"
ip netns add "$ns"
ip netns exec "$ns" unshare -m sh -c "mount --make-rprivate / &&
    mount --bind '$dir/devs' /sys/bus/event_source/devices &&
    timeout -s TERM $seconds '$kpo' run --policy '$dir/policy.toml' --state-dir '$dir/state' \
        --socket '$dir/sock' --tick $tick --window $window --events '$dir/events.ndjson'" \
    2> "$dir/log" || { rc=$?; [ $rc = 124 ] || { cat "$dir/log" >&2; exit $rc; }; }
python3 - "$dir/events.ndjson" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
print("source:", events[0]["energy"]["source"], events[0]["energy"]["domains"])
gaps = sorted((e["energy"]["joules"] - e["duration_s"]) * 1000 for e in events
              if e["kind"] == "window" and e["energy"]["joules"] is not None)
n = len(gaps)
print(f"windows {n}; joules - duration_s in ms: min {gaps[0]:.1f}, median {gaps[n // 2]:.1f}, "
      f"max {gaps[-1]:.1f}; beyond 5 ms: {sum(abs(g) > 5 for g in gaps)}")
PY
