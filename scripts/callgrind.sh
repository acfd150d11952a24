#!/usr/bin/env bash
# Exact instruction counts of scout-core's hot paths, with callgrind (valgrind).
#
#   scripts/callgrind.sh            build scout-core/examples/hot_path.rs (release) and print
#                                   `IR <case>: <n> instructions/op` per case, and a ratio
#
# Method: each case of the example runs LOW and HIGH iterations (default 1000 and 11000) under
# `valgrind --tool=callgrind`; instructions/op = (Ir(HIGH) - Ir(LOW)) / (HIGH - LOW). Process
# start-up, the request's set-up and exit are the same in both runs and cancel exactly, so the
# result is the cost of one iteration, identical from run to run and machine load (callgrind
# counts guest instructions; it does not time anything). Cases:
#   span   start a span ('static name) + tag it (integer) + stop it on an open request, reading
#          a fake clock (a counter) twice: the agent's per-span cost without the clock
#   encode write_frame_to_slice of a finished 10-span request (41 commands, 8.9 KB of JSON)
#   clock  two std::time::SystemTime::now() calls: what a real clock adds to each span.
#          Caveat: under valgrind glibc cannot use the vDSO, so clock_gettime is a system call
#          whose kernel side is not counted; natively each call runs the vDSO (tens of
#          instructions more, no system call). The ratio is therefore "span vs the user-space
#          part of two clock reads", not a wall-time ratio (see benches/hot_path.rs for that).
#
# Environment (all optional):
#   CALLGRIND_LOW / CALLGRIND_HIGH   iteration counts (default 1000 / 11000)
#   CALLGRIND_CASES                  subset of "span encode clock"
# Needs valgrind (Debian package `valgrind`; .ci/run installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOW="${CALLGRIND_LOW:-1000}"
HIGH="${CALLGRIND_HIGH:-11000}"
CASES="${CALLGRIND_CASES:-span encode clock}"

log() { printf '[callgrind] %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "FAIL: valgrind not installed (apt-get install valgrind)"; exit 1; }
((HIGH > LOW)) || { log "FAIL: CALLGRIND_HIGH ($HIGH) must exceed CALLGRIND_LOW ($LOW)"; exit 1; }

cargo build --release -q -p scout-core --example hot_path
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/hot_path"
[[ -x "$bin" ]] || { log "FAIL: $bin not built"; exit 1; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# ir CASE N: total instructions of one run.
ir() {
  local out="$scratch/cg.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" 2>"$out.log" >/dev/null \
    || { log "FAIL: $1 $2 under valgrind:"; cat "$out.log" >&2; exit 1; }
  # The `totals:` (or `summary:`) line of the profile: the Ir of the whole run.
  awk '/^(totals|summary):/ {print $2; exit}' "$out"
}

declare -A per_op
for c in $CASES; do
  lo="$(ir "$c" "$LOW")"
  hi="$(ir "$c" "$HIGH")"
  per_op[$c]="$(awk -v a="$lo" -v b="$hi" -v n=$((HIGH - LOW)) 'BEGIN {printf "%.1f", (b - a) / n}')"
  log "$c: Ir($LOW)=$lo Ir($HIGH)=$hi"
done

name() {
  case "$1" in
    span) echo span_start_tag_stop ;;
    encode) echo encode_10_span_request ;;
    clock) echo two_system_time_now ;;
    *) echo "$1" ;;
  esac
}
for c in $CASES; do
  echo "IR $(name "$c"): ${per_op[$c]} instructions/op"
done
if [[ -n "${per_op[span]:-}" && -n "${per_op[clock]:-}" ]]; then
  awk -v s="${per_op[span]}" -v k="${per_op[clock]}" \
    'BEGIN {printf "RATIO span_start_tag_stop / two_system_time_now: %.2f (user-space instructions; the clock'"'"'s system calls are not counted)\n", s / k}'
fi
