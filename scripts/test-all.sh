#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, then every
# test of the workspace (unit, property, crash, corruption, HTTP, export, integration).
set -euo pipefail
cd "$(dirname "$0")/.."

# The export tests read Parquet and JSONL back with pyarrow, an independent implementation.
if ! python3 -c "import pyarrow" 2>/dev/null; then
    echo "installing pyarrow (for the export tests)"
    python3 -m pip install --quiet --disable-pip-version-check pyarrow
fi

# Tests build in debug with optimised dependencies (see Cargo.toml); one shared target dir.
cargo test --workspace --locked "$@"
