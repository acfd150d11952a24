#!/usr/bin/env bash
# The main demo: builds the local core agent (`scout-local-agent`) and runs an instrumented example
# application against it. The application's own agent (scout_std) verifies and launches the local
# agent through its core-agent manager, exactly as it would launch Scout's core agent; the demo
# then prints the endpoint table and the slowest trace, stops the agent and exits.
#
#   bash scripts/demo.sh            # debug build
#   bash scripts/demo.sh --release  # optimised build
set -euo pipefail
cd "$(dirname "$0")/.."

flag=""
sub=debug
if [[ "${1:-}" == "--release" ]]; then
    flag=--release
    sub=release
fi

echo "Building scout-local-agent and the demo application..."
cargo build --quiet $flag -p scout-std --bin scout-local-agent
cargo build --quiet $flag -p scout-examples --example demo

# The demo would also find scout-local-agent next to its own executable; say it explicitly.
target_dir="${CARGO_TARGET_DIR:-target}"
export SCOUT_LOCAL_AGENT_BIN="$target_dir/$sub/scout-local-agent"
exec "$target_dir/$sub/examples/demo"
