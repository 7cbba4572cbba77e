#!/usr/bin/env bash
# Runs one measured scenario on this machine: builds, starts a fresh fieldvox server
# (embedded stores, sample manual for tenant "acme") and, for the load-reference
# pipeline, the load-test reference server; then runs fieldvox-load and stops both.
#
#   load-tests/run.sh [fieldvox-load args...]
#   e.g. load-tests/run.sh --scenario idle --sessions 50000 --source-ips 4 --hold-secs 300
#        load-tests/run.sh --scenario talk --sessions 1 --pipeline field-assistant --interval-secs 8 --reference-ms 0
#        load-tests/run.sh --scenario mic --sessions 1000 --noise-dbfs -45 --echo-gain-db -6 --hold-secs 120
#
# Environment: PORT (default 8090), BUILD_PROFILE (dev|release, default dev),
# FIELDVOX_SERVER_BIN (the fieldvox binary to measure, default the one just built: set it
# to another commit's build, with FIELDVOX__PIPELINES__DIR at that commit's profiles, for a
# before/after comparison with the same load generator; build that commit with a target
# directory of its own, as one shared by two checkouts can mix their sources' builds),
# SERVER_LOG (a file to keep the server's log in; RUST_LOG sets its level, default warn),
# INGEST_PAGES (set it to upload a generated manual of that many pages to tenant acme over
# and over, a new version each time, for as long as the load runs: ingest under load),
# FIELDVOX__… variables are passed to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
port="${PORT:-8090}"
profile="${BUILD_PROFILE:-dev}"
# The dev build is the one the README commands make (scripts/build.sh): nothing is rebuilt.
if [ "$profile" = release ]; then cargo build --workspace --bins --release; else scripts/build.sh; fi
bin="$CARGO_TARGET_DIR/$([ "$profile" = release ] && echo release || echo debug)"
server_bin="${FIELDVOX_SERVER_BIN:-$bin/fieldvox}"

data=$(mktemp -d /tmp/fieldvox-load-XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  [ -n "${SERVER_LOG:-}" ] && cp "$data/server.log" "$SERVER_LOG"
  rm -rf "$data"
}
trap cleanup EXIT

if [[ " $* " != *" --pipeline "* || " $* " == *" --pipeline load-reference "* ]]; then
  "$bin/fieldvox-reference" > "$data/reference.log" 2>&1 &
  pids+=($!)
  # Clients cannot select the reference profile; the server must default to it.
  export FIELDVOX__PIPELINES__DEFAULT=load-reference
fi
export FIELDVOX__DATA__DIR="$data"
# Thousands of simulated phones share a few loopback addresses: lift the per-address cap
# on connections still in their handshake (it is tuned for real clients, one per address).
export FIELDVOX__SERVER__MAX_UNAUTHENTICATED_PER_IP="${FIELDVOX__SERVER__MAX_UNAUTHENTICATED_PER_IP:-1000000}"
# Likewise the connection-attempt rate of one address, and the fair-use totals of tenant
# acme, which here is thousands of technicians at once (each simulated user keeps the
# per-user defaults).
export FIELDVOX__LIMITS__CONNECTION_ATTEMPTS="${FIELDVOX__LIMITS__CONNECTION_ATTEMPTS:-100000000/min}"
for limit in SESSION_OPENS TURNS SEARCHES; do
  var="FIELDVOX__LIMITS__TENANT__$limit"; export "$var=${!var:-100000000/min}"
done
export FIELDVOX__LIMITS__TENANT__AUDIO_SECONDS="${FIELDVOX__LIMITS__TENANT__AUDIO_SECONDS:-100000000/h}"
for tenant in acme globex; do  # globex: the other company of --scenario abandon
  "$server_bin" ingest tests/fixtures/rtu40-service-manual.txt --tenant "$tenant" --equipment RTU-40 \
    --title "RTU-40 Service Manual" > /dev/null
done
# --dev: fieldvox-load mints its tokens with the development secret unless
# FIELDVOX__AUTH__JWT_SECRET is set (then both use that).
dev=(); [ -z "${FIELDVOX__AUTH__JWT_SECRET:-}" ] && dev=(--dev)
RUST_LOG="${RUST_LOG:-warn}" "$server_bin" serve "${dev[@]}" --listen "127.0.0.1:$port" > "$data/server.log" 2>&1 &
server=$!
pids+=($server)
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null || { cat "$data/server.log"; exit 1; }
echo "server pid $server ready on port $port" >&2
if [ -n "${INGEST_PAGES:-}" ]; then
  # Admin uploads for the talking technicians' own company, a new version each time (the
  # two files alternate; every publish also expires the technicians' cached retrievals).
  # The files are made before the load starts: making them is not the server's work.
  for v in 1 2; do
    "$FIELDVOX_CACHE/venv/bin/python" tests/clients/make_manual_pdf.py "$data/ingest-$v.pdf" \
      --pages "$INGEST_PAGES" --torque "$((40 + v))"
  done
  (
    i=0
    while true; do
      i=$((i + 1))
      if "$bin/fieldvox" manuals upload "$data/ingest-$((i % 2 + 1)).pdf" --equipment BX-7 \
        --title "BX-7 Service Manual" --url "http://127.0.0.1:$port" --tenant acme --user load-admin \
        > /dev/null 2>> "$data/ingest.log"; then
        echo ok >> "$data/ingests.done"
      fi
    done
  ) &
  pids+=($!)
fi
"$bin/fieldvox-load" --url "ws://127.0.0.1:$port/v1/realtime" --server-pid "$server" "$@"
if [ -n "${INGEST_PAGES:-}" ]; then
  echo "ingests of the $INGEST_PAGES-page manual completed during the run: $(wc -l < "$data/ingests.done" 2>/dev/null || echo 0)"
fi
