#!/usr/bin/env bash
# Demo firmware gate (see firmware/ and docs/device-protocol.md, "Firmware"):
#   1. installs what it needs (Debian: rustc-web cargo-web rust-web-src lld-22 qemu-system-arm;
#      skipped when present; installing qemu-system-arm replaces the image's qemu-utils),
#   2. builds the Cortex-M firmware for QEMU's lm3s6965evb twice through Debian's rustc-web
#      (RUSTC_BOOTSTRAP=1 -Zbuild-std=core): with the agent, and with `--features no-agent`
#      (the same app against no-op stubs, and the same board glue: a link task driving the
#      UART driver, there an echo),
#   3. prints text/data/bss of both and what scout-core + scout-embassy add, against the
#      targets F1 (flash <= 4 KB) and F2 (static RAM <= 1 KB plus the send queue), whether
#      each is met, and (with an llvm-nm) the symbols that grew most,
#   4. runs scout-std's `firmware_qemu` test with SCOUT_REQUIRE_FIRMWARE=1: the firmware under
#      qemu-system-arm, its UART on a TCP connection to a gateway, and its requests checked
#      at a local core agent.
#
#   scripts/firmware.sh [all|build|test]    (default all; `build` = steps 1-3)
#
# Environment (all optional):
#   FIRMWARE_SKIP_INSTALL=1   never call apt-get
#   DEB_RUSTC / DEB_CARGO     Debian's rustc/cargo (default: found with dpkg -L)
#   FIRMWARE_MAX_AGENT_FLASH  fail when the agent's flash share exceeds this many bytes
#   FIRMWARE_MAX_AGENT_RAM    same for static RAM (.data + .bss); both default to a ceiling
#                             just above today's numbers (4 088 B and 564 B), to catch
#                             regressions; the targets F1/F2 are reported, not enforced
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TARGET=thumbv7m-none-eabi
FW_DIR="$ROOT/firmware"
OUT_DIR="$FW_DIR/target/$TARGET/release"
ELF="$OUT_DIR/scout-firmware"
ELF_BARE="$OUT_DIR/scout-firmware-no-agent"
MAX_FLASH="${FIRMWARE_MAX_AGENT_FLASH:-4160}"
MAX_RAM="${FIRMWARE_MAX_AGENT_RAM:-608}"
PACKAGES=(rustc-web cargo-web rust-web-src lld-22 qemu-system-arm)

log() { printf '[firmware] %s\n' "$*"; }
die() { printf '[firmware] FAIL: %s\n' "$*" >&2; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

install() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then
    log "packages present: ${PACKAGES[*]}"
    return 0
  fi
  [[ "${FIRMWARE_SKIP_INSTALL:-0}" == 1 ]] && die "missing packages: ${missing[*]} (FIRMWARE_SKIP_INSTALL=1)"
  local sudo=()
  if ((EUID != 0)); then
    sudo -n true 2>/dev/null || die "missing packages: ${missing[*]}; need root or passwordless sudo"
    sudo=(sudo -n -E)
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
}

toolchain() {
  DEB_RUSTC="${DEB_RUSTC:-$(dpkg -L rustc-web 2>/dev/null | grep -m1 '/bin/rustc$' || true)}"
  DEB_CARGO="${DEB_CARGO:-$(dpkg -L cargo-web 2>/dev/null | grep -m1 '/bin/cargo$' || true)}"
  [[ -x "$DEB_RUSTC" && -x "$DEB_CARGO" ]] || die "Debian rustc-web/cargo-web not found"
  log "toolchain: $("$DEB_RUSTC" --version)"
}

# fw_build [cargo args...]: one release build of the firmware.
fw_build() {
  (cd "$FW_DIR" && env RUSTC="$DEB_RUSTC" RUSTC_BOOTSTRAP=1 \
    "$DEB_CARGO" build --release --locked -Zbuild-std=core --target "$TARGET" "$@")
}

# sizes ELF: prints "text data bss" in bytes (Berkeley convention: allocated read-only
# sections are text, allocated writable PROGBITS data, allocated NOBITS bss), from the
# section headers, so any binutils readelf works for an ARM ELF.
sizes() {
  readelf -S -W "$1" | sed -n 's/^ *\[ *[0-9]*\] //p' | awk '
    NF == 10 && $7 ~ /A/ {
      n = strtonum_hex($5)
      if ($7 !~ /W/) text += n; else if ($2 == "NOBITS") bss += n; else data += n
    }
    function strtonum_hex(h,   i, c, v) {
      v = 0; h = tolower(h)
      for (i = 1; i <= length(h); i++) { c = index("0123456789abcdef", substr(h, i, 1)) - 1; v = v * 16 + c }
      return v
    }
    END { printf "%d %d %d\n", text, data, bss }'
}

# ram_symbols ELF: the largest objects in RAM (addresses 0x2000_0000 and up).
ram_symbols() {
  readelf -s -W --demangle "$1" | awk '$4 == "OBJECT" && $3 > 0 && $2 ~ /^2/ { print }' \
    | awk '{ printf "%8d  %s\n", $3, substr($0, index($0, $8)) }' | sort -rn | head -6 \
    | sed 's/^/[firmware]     /'
}

# grown ELF BASE: the symbols (code and data) that grew most from BASE to ELF, with llvm-nm
# when one is installed (skipped otherwise). Generic parameters are shortened.
grown() {
  local nm
  nm="$(command -v llvm-nm-22 || command -v llvm-nm || true)"
  [[ -n "$nm" ]] || { log "(no llvm-nm: no symbol breakdown)"; return 0; }
  log "largest growth by symbol (bytes, $(basename "$nm")):"
  { "$nm" -S -C --radix=d "$2" | awk '{ print "B", $0 }'; "$nm" -S -C --radix=d "$1" | awk '{ print "A", $0 }'; } \
    | awk '$4 ~ /^[tTrRdD]$/ {
        name = $0; sub(/^[AB] +[0-9]+ +[0-9]+ +[a-zA-Z] +/, "", name)
        gsub(/scout_core::storage::Fixed<[^>]*>/, "F", name); gsub(/<F, [^>]*>/, "<F>", name)
        size[name] += ($1 == "A" ? 1 : -1) * $3
      }
      END { for (n in size) if (size[n] > 0) printf "%6d  %s\n", size[n], substr(n, 1, 110) }' \
    | sort -rn | head -12 | sed 's/^/[firmware]   /'
}

build() {
  install
  toolchain
  local start=$SECONDS
  log "build firmware without the agent (--features no-agent)"
  fw_build --features no-agent
  cp "$ELF" "$ELF_BARE"
  log "build firmware with the agent"
  fw_build
  log "built both in $((SECONDS - start))s: $ELF"

  local t d b t0 d0 b0
  read -r t d b < <(sizes "$ELF")
  read -r t0 d0 b0 < <(sizes "$ELF_BARE")
  local flash=$((t + d)) flash0=$((t0 + d0)) ram=$((d + b)) ram0=$((d0 + b0))
  printf '[firmware] %-22s %8s %8s %8s %8s %8s\n' "" text data bss flash ram
  printf '[firmware] %-22s %8d %8d %8d %8d %8d\n' "with agent" "$t" "$d" "$b" "$flash" "$ram"
  printf '[firmware] %-22s %8d %8d %8d %8d %8d\n' "no-agent (same app)" "$t0" "$d0" "$b0" "$flash0" "$ram0"
  local aflash=$((flash - flash0)) aram=$((ram - ram0))
  printf '[firmware] %-22s %8d %8d %8d %8d %8d\n' "agent share" "$((t - t0))" "$((d - d0))" "$((b - b0))" "$aflash" "$aram"
  log "largest static objects with the agent:"
  ram_symbols "$ELF"
  grown "$ELF" "$ELF_BARE"
  # The send queue: the firmware Agent's two 64-byte request slots, which hold finished
  # requests until the link sends them (firmware/agent/src/lib.rs).
  local queue=128
  local f1 f2
  f1=$( ((aflash <= 4096)) && echo "met" || echo "NOT met ($((aflash - 4096)) B over)")
  f2=$( ((aram - queue <= 1024)) && echo "met" || echo "NOT met ($((aram - queue - 1024)) B over)")
  log "F1 flash: agent adds $aflash B (target <= 4096 B): $f1"
  log "F2 RAM:   agent adds $aram B, of which the send queue $queue B; $((aram - queue)) B without it (target <= 1024 B plus the queue): $f2"
  ((aflash <= MAX_FLASH)) || die "agent flash share $aflash B exceeds FIRMWARE_MAX_AGENT_FLASH=$MAX_FLASH"
  ((aram <= MAX_RAM)) || die "agent RAM share $aram B exceeds FIRMWARE_MAX_AGENT_RAM=$MAX_RAM"
}

run_test() {
  install
  [[ -f "$ELF" ]] || die "no firmware at $ELF (run: scripts/firmware.sh build)"
  log "qemu: $(qemu-system-arm --version | head -n1)"
  log "cargo test -p scout-std --test firmware_qemu (SCOUT_REQUIRE_FIRMWARE=1)"
  SCOUT_FIRMWARE_ELF="$ELF" SCOUT_REQUIRE_FIRMWARE=1 \
    cargo test -p scout-std --test firmware_qemu -- --nocapture
}

case "${1:-all}" in
  build) build ;;
  test) run_test ;;
  all) build; run_test ;;
  *) echo "usage: $0 [all|build|test]" >&2; exit 2 ;;
esac
