#!/usr/bin/env bash
# Sets up (packages, models), loads the sample manual for tenant "demo" on first run,
# and runs the server on embedded defaults at 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
scripts/build.sh
bin="$CARGO_TARGET_DIR/debug/fieldvox"
if [ ! -e data/fieldvox.sqlite ]; then
  "$bin" ingest tests/fixtures/rtu40-service-manual.txt --tenant demo --equipment RTU-40 --title "RTU-40 Service Manual"
fi
echo "technician token for tenant demo: $("$bin" token --tenant demo --user tech-1)"
exec "$bin" serve "$@"
