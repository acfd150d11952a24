#!/usr/bin/env bash
# Exact instructions per request that the axum integration adds, with callgrind (valgrind).
#
#   scripts/callgrind-layers.sh     build scout-std/examples/layer_cost.rs (release, feature
#                                   axum) and print `IR <mode>: <n> instructions/request` and
#                                   what each mode adds over `plain`
#
# Method as scripts/callgrind.sh: each mode runs LOW and HIGH requests under
# `valgrind --tool=callgrind --separate-threads=yes --toggle-collect=*drive*`, and
# instructions/request = (Ir(HIGH) - Ir(LOW)) / (HIGH - LOW), counted on the application's
# thread only (the agent's sender thread and the local core agent are not counted: they are
# the background work a wall-clock or thread-CPU benchmark of the request does not see
# either). Modes: plain (no layer), identity (two identity layers added the way Scout's are,
# what axum itself charges for layers), scout-off (Scout's layers, agent not installed),
# scout-on (installed, reporting to an in-process local core agent), and api-10-spans (not a
# layer: the `agent` bench's 10-span request through the public API, per request). Clock
# reads are system calls under valgrind, whose kernel side is not counted.
#
# Environment (all optional):
#   CALLGRIND_LOW / CALLGRIND_HIGH   request counts (default 200 / 2200)
#   CALLGRIND_MODES                  subset of "plain identity scout-off scout-on api-10-spans"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOW="${CALLGRIND_LOW:-200}"
HIGH="${CALLGRIND_HIGH:-2200}"
MODES="${CALLGRIND_MODES:-plain identity scout-off scout-on api-10-spans}"

log() { printf '[callgrind-layers] %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "FAIL: valgrind not installed (apt-get install valgrind)"; exit 1; }
((HIGH > LOW)) || { log "FAIL: CALLGRIND_HIGH ($HIGH) must exceed CALLGRIND_LOW ($LOW)"; exit 1; }

cargo build --release -q -p scout-std --features axum --example layer_cost
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/layer_cost"
[[ -x "$bin" ]] || { log "FAIL: $bin not built"; exit 1; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# ir MODE N: instructions of the main thread inside `drive` (both calls: warm-up + N).
ir() {
  local out="$scratch/cg.$1.$2"
  valgrind --tool=callgrind --separate-threads=yes --toggle-collect='*layer_cost::drive*' \
    --callgrind-out-file="$out" "$bin" "$1" "$2" 2>"$out.log" >/dev/null \
    || { log "FAIL: $1 $2 under valgrind:"; cat "$out.log" >&2; exit 1; }
  # Thread 1 is the application's thread.
  awk '/^(totals|summary):/ {print $2; exit}' "$out-01"
}

declare -A per_req
for m in $MODES; do
  lo="$(ir "$m" "$LOW")"
  hi="$(ir "$m" "$HIGH")"
  per_req[$m]="$(awk -v a="$lo" -v b="$hi" -v n=$((HIGH - LOW)) 'BEGIN {printf "%.0f", (b - a) / n}')"
  log "$m: Ir($LOW)=$lo Ir($HIGH)=$hi"
done
for m in $MODES; do
  if [[ -n "${per_req[plain]:-}" && "$m" != api-10-spans ]]; then
    echo "IR $m: ${per_req[$m]} instructions/request (+$((per_req[$m] - per_req[plain])) over plain)"
  else
    echo "IR $m: ${per_req[$m]} instructions/request"
  fi
done
