#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target in fuzz/ and run each for a
# bounded time. Fails if a target does not build or any run finds a crash,
# leak, timeout or OOM. Called by .ci/run.
#
# Environment (all optional):
#   FUZZ_SECONDS     seconds per target (default 10)
#   FUZZ_TARGETS     space-separated subset (default: every [[bin]] in fuzz/Cargo.toml)
#   FUZZ_TOOLCHAIN   rustup toolchain (default: nightly if installed, else stable)
#   FUZZ_SANITIZER   cargo-fuzz -s value (default: address on nightly, none on stable)
#
# Seeds: files in fuzz/corpus/<target>/ (committed ones are named seed*) are
# read as an extra corpus; new inputs go to a scratch dir, so runs never write
# into the source tree. Crash reproducers land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"

log() { printf '[fuzz] %s\n' "$*"; }

command -v cargo-fuzz >/dev/null || { log "FAIL: cargo-fuzz not installed (cargo install cargo-fuzz --locked)"; exit 1; }

if [[ -z "${FUZZ_TOOLCHAIN:-}" ]]; then
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ_TOOLCHAIN=nightly
  else
    # Fresh machines may only have stable; plain stable works without sanitizers.
    FUZZ_TOOLCHAIN=stable
    log "no nightly toolchain: falling back to stable without sanitizer (-s none)"
  fi
fi
if [[ -z "${FUZZ_SANITIZER:-}" ]]; then
  if [[ $FUZZ_TOOLCHAIN == nightly* ]]; then FUZZ_SANITIZER=address; else FUZZ_SANITIZER=none; fi
fi
# Same flags for build and run, so run does not rebuild. Default build mode is
# optimized with debug assertions + overflow checks.
FLAGS=(--fuzz-dir "$ROOT/fuzz" -s "$FUZZ_SANITIZER")
cargo_fuzz() { cargo "+$FUZZ_TOOLCHAIN" fuzz "$@"; }
log "toolchain: $(rustup run "$FUZZ_TOOLCHAIN" rustc --version), sanitizer: $FUZZ_SANITIZER, $FUZZ_SECONDS s per target"

if [[ -z "${FUZZ_TARGETS:-}" ]]; then
  FUZZ_TARGETS="$(cargo_fuzz list --fuzz-dir "$ROOT/fuzz" | tr '\n' ' ')"
fi
[[ -n "${FUZZ_TARGETS// }" ]] || { log "FAIL: no fuzz targets found in fuzz/Cargo.toml"; exit 1; }
log "targets: $FUZZ_TARGETS"

start=$SECONDS
cargo_fuzz build "${FLAGS[@]}"
log "built all targets in $((SECONDS - start))s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $FUZZ_TARGETS; do
  corpora=("$scratch/$t")
  mkdir -p "$scratch/$t"
  [[ -d "fuzz/corpus/$t" ]] && corpora+=("$ROOT/fuzz/corpus/$t")
  start=$SECONDS
  logf="$scratch/$t.log"
  if cargo_fuzz run "${FLAGS[@]}" "$t" "${corpora[@]}" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$logf" 2>&1; then
    runs="$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$logf" | grep -oE '[0-9]+$' || echo '?')"
    cov="$(grep -oE 'cov: [0-9]+' "$logf" | tail -n1 || true)"
    log "ok: $t: $runs runs in $((SECONDS - start))s, ${cov:-cov: ?}, seeds: $( [[ -d fuzz/corpus/$t ]] && find "fuzz/corpus/$t" -type f | wc -l || echo 0)"
  else
    log "FAILED: $t after $((SECONDS - start))s; reproducer in fuzz/artifacts/$t/ (cargo fuzz run $t <file>)"
    grep -m8 -E "panicked at|ERROR:|SUMMARY:|error(\[E[0-9]+\])?:" "$logf" || true
    log "last 40 lines of the $t log:"
    tail -n 40 "$logf"
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  log "FAIL: ${#failed[@]} target(s) crashed: ${failed[*]}"
  exit 1
fi
log "all targets ran clean"
