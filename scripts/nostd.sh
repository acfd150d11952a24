#!/usr/bin/env bash
# no_std gates for scout-core (see shared/TOOLCHAIN.md §3). Called by .ci/run.
#
#   scripts/nostd.sh host    build + run nostd-check/ (host #![no_std] #![no_main] binary, libc only)
#   scripts/nostd.sh tree    no dependency of the no_std crates enables a `std`/`alloc` feature
#   scripts/nostd.sh cross   -Zbuild-std=core builds for bare-metal targets via Debian's rustc-web
#   scripts/nostd.sh [all]   all three
#
# Environment (all optional):
#   NOSTD_CRATES        crates to check (default: scout-core, plus scout-embassy once it exists)
#   NOSTD_TARGETS       bare-metal targets (default: thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imc-unknown-none-elf)
#   NOSTD_DEFMT_TARGET  target also built with the crates' `defmt` feature (default: thumbv7em-none-eabihf)
#   NOSTD_TREE_FEATURES features checked by `tree` besides the defaults, where a crate has them (default: defmt)
#   DEB_RUSTC/DEB_CARGO Debian's rustc/cargo (default: found with dpkg -L rustc-web / cargo-web)
#   NOSTD_MIN_RUSTC     minimum rustc-web version (default 1.88: heapless 0.9 / postcard 1.2 MSRV)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

if [[ -z "${NOSTD_CRATES:-}" ]]; then
  NOSTD_CRATES="scout-core"
  # scout-embassy joins automatically once it is in the workspace.
  [[ -f scout-embassy/Cargo.toml ]] && NOSTD_CRATES+=" scout-embassy"
fi
NOSTD_TARGETS="${NOSTD_TARGETS:-thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imc-unknown-none-elf}"
NOSTD_DEFMT_TARGET="${NOSTD_DEFMT_TARGET:-thumbv7em-none-eabihf}"
NOSTD_MIN_RUSTC="${NOSTD_MIN_RUSTC:-1.88}"
NOSTD_TREE_FEATURES="${NOSTD_TREE_FEATURES:-defmt}"

log() { printf '[nostd] %s\n' "$*"; }
die() { printf '[nostd] FAIL: %s\n' "$*" >&2; exit 1; }

# version_ge A B: true if version A >= B
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# Crate names double as their directory names (scout-core/, scout-embassy/).
pkg_args() { local c; for c in $NOSTD_CRATES; do printf -- '-p\n%s\n' "$c"; done; }

# --- a. host no_std binary --------------------------------------------------
gate_host() {
  local profile out
  for profile in dev release; do
    log "nostd-check ($profile): build + run"
    local args=(--manifest-path nostd-check/Cargo.toml --target-dir "$ROOT/target/nostd-check")
    [[ $profile == release ]] && args+=(--release)
    cargo build "${args[@]}"
    out="$(cargo run -q "${args[@]}")" || die "nostd-check ($profile) exited non-zero: $out"
    [[ "$out" == "ok" ]] || die "nostd-check ($profile) printed '$out', expected 'ok'"
    log "nostd-check ($profile): printed '$out', exit 0"
  done
}

# --- b. dependency features --------------------------------------------------
gate_tree() {
  local pat='feature "(std|alloc)"' crate feats tree bad=0
  # Self-test: the pattern must match a std crate's tree, or cargo tree's format changed.
  cargo tree -p scout-std -e features,normal --prefix none | grep -qE "$pat" \
    || die "self-test: pattern '$pat' matched nothing in scout-std's tree (cargo tree output format changed?)"
  for crate in $NOSTD_CRATES; do
    local sets=("")
    # Also each no_std feature the crate declares (never `std`: that one may pull std).
    local f
    for f in $NOSTD_TREE_FEATURES; do
      grep -qE "^${f}[[:space:]]*=" "$crate/Cargo.toml" 2>/dev/null && sets+=("--features $crate/$f")
    done
    for feats in "${sets[@]}"; do
      # no-proc-macro: proc macros run on the host, their std is fine.
      # shellcheck disable=SC2086
      tree="$(cargo tree -p "$crate" $feats -e features,normal,no-proc-macro --target thumbv7em-none-eabihf)"
      if grep -E "$pat" <<<"$tree"; then
        log "FAIL: $crate ${feats:-(default features)}: a dependency enables std/alloc (lines above); full tree:"
        printf '%s\n' "$tree"
        bad=1
      else
        log "$crate ${feats:-(default features)}: $(grep -c . <<<"$tree") tree lines, no std/alloc feature"
      fi
    done
  done
  return $bad
}

# --- c. bare-metal cross builds via Debian rustc-web -------------------------
gate_cross() {
  local deb_rustc="${DEB_RUSTC:-}" deb_cargo="${DEB_CARGO:-}"
  if [[ -z "$deb_rustc" ]]; then
    deb_rustc="$(dpkg -L rustc-web 2>/dev/null | grep -m1 '/bin/rustc$' || true)"
  fi
  if [[ -z "$deb_cargo" ]]; then
    deb_cargo="$(dpkg -L cargo-web 2>/dev/null | grep -m1 '/bin/cargo$' || true)"
  fi
  [[ -x "$deb_rustc" && -x "$deb_cargo" ]] \
    || die "Debian rustc-web/cargo-web not installed (apt-get install rustc-web cargo-web rust-web-src lld-22; .ci/run does this)"
  local ver
  ver="$("$deb_rustc" --version | awk '{print $2}')"
  log "Debian toolchain: $("$deb_rustc" --version) / $("$deb_cargo" --version)"
  version_ge "$ver" "$NOSTD_MIN_RUSTC" \
    || die "Debian rustc-web is $ver, but scout-core's dependencies (heapless 0.9, postcard 1.2) need rustc >= $NOSTD_MIN_RUSTC; no bare-metal build is possible until Debian ships a newer rustc-web (apt-get update && apt-cache policy rustc-web)"
  local src
  src="$("$deb_rustc" --print sysroot)/lib/rustlib/src/rust/library"
  [[ -d "$src" ]] || die "rust-src for Debian rustc not found at $src (apt-get install rust-web-src)"

  local -a pkgs
  mapfile -t pkgs < <(pkg_args)
  local t failed=()
  local builds=()
  for t in $NOSTD_TARGETS; do builds+=("$t|"); done
  if [[ -n "$NOSTD_DEFMT_TARGET" ]]; then
    local c defmt_feats=""
    for c in $NOSTD_CRATES; do
      grep -qE '^defmt[[:space:]]*=' "$c/Cargo.toml" 2>/dev/null && defmt_feats+="${defmt_feats:+,}$c/defmt"
    done
    [[ -n "$defmt_feats" ]] && builds+=("$NOSTD_DEFMT_TARGET|$defmt_feats")
  fi
  local b feat start
  for b in "${builds[@]}"; do
    t="${b%%|*}" feat="${b#*|}"
    local extra=()
    [[ -n "$feat" ]] && extra=(--features "$feat")
    log "build ${NOSTD_CRATES} for $t${feat:+ with $feat}"
    start=$SECONDS
    if env RUSTC="$deb_rustc" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$ROOT/target/cross" \
        "$deb_cargo" build "${pkgs[@]}" "${extra[@]}" -Zbuild-std=core --target "$t"; then
      log "ok: $t${feat:+ +$feat} ($((SECONDS - start))s)"
    else
      log "FAILED: $t${feat:+ +$feat} ($((SECONDS - start))s)"
      failed+=("$t${feat:+ +$feat}")
    fi
  done
  ((${#failed[@]} == 0)) || die "cross build failed for: ${failed[*]}"
}

case "${1:-all}" in
  host) gate_host ;;
  tree) gate_tree ;;
  cross) gate_cross ;;
  all) gate_host; gate_tree; gate_cross ;;
  *) echo "usage: $0 [host|tree|cross|all]" >&2; exit 2 ;;
esac
