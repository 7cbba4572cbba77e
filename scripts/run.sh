#!/usr/bin/env bash
# Sets up (packages, models), loads the sample manual for tenant "demo" on first run,
# and runs the server on embedded defaults at 127.0.0.1:8080. Prints a token and a talk
# page URL for tenant "demo". Arguments go to `fieldvox serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
scripts/build.sh
bin="$CARGO_TARGET_DIR/debug/fieldvox"
if [ ! -e data/fieldvox.sqlite ]; then
  "$bin" ingest tests/fixtures/rtu40-service-manual.txt --tenant demo --equipment RTU-40 --title "RTU-40 Service Manual"
fi
token="$("$bin" token --tenant demo --user tech-1)"
listen=127.0.0.1:8080
args=("$@")
for i in "${!args[@]}"; do
  [ "${args[$i]}" = "--listen" ] && listen="${args[$((i + 1))]:-$listen}"
done
echo "technician token for tenant demo: $token"
echo "talk page (open when the server says it is listening): http://$listen/#token=$token"
if [ -z "${FIELDVOX__AUTH__JWT_SECRET:-}" ]; then
  echo "development mode (--dev): the server accepts tokens signed with the built-in secret, which anyone"
  echo "can mint. Set FIELDVOX__AUTH__JWT_SECRET (or auth.jwks) and drop --dev for anything else."
  exec "$bin" serve --dev "$@"
fi
exec "$bin" serve "$@"
