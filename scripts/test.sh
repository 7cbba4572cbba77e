#!/usr/bin/env bash
# Sets up (packages, models) and runs every test: unit tests and the end-to-end tests
# against a real server with the real models.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
cargo test --workspace "$@"
