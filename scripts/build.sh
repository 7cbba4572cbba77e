#!/usr/bin/env bash
# Builds everything both README commands need, in one cargo invocation with one feature
# set: the server binary and every test. scripts/run.sh and scripts/test.sh both call it,
# so whichever runs second finds the build done (cargo resolves features per invocation,
# so building the server alone would compile its dependencies a second time).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --workspace --no-run
