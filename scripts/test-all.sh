#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, then every
# test of the workspace (unit, property, crash, corruption, integration).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests build in debug with optimised dependencies (see Cargo.toml); one shared target dir.
cargo test --workspace --locked "$@"
