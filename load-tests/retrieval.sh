#!/usr/bin/env bash
# Retrieval latency at scale (README, "Benchmarks"): the same chunks, tenants and
# questions on the embedded stack, then on MongoDB + Redis, in one sitting. Starts a
# redis-server and an nx-27017 (the MongoDB wire-protocol server the tests use) on free
# ports and stops them at the end. FIELDVOX_TEST_QDRANT_URL adds a run with vectors on
# that Qdrant server.
#
#   load-tests/retrieval.sh [CHUNKS] [TENANTS] [QUESTIONS]     (default 100000 100 300)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
chunks="${1:-100000}"
tenants="${2:-100}"
questions="${3:-300}"
bench="$CARGO_TARGET_DIR/debug/fieldvox-retrieval-bench"
work=$(mktemp -d /tmp/fieldvox-retrieval-XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > /dev/null &
pids+=($!)
mongo_port=$(free_port)
"$FIELDVOX_CACHE/venv/bin/nx-27017" --data-dir "$work/nx" -p "$mongo_port" --log-file "$work/nx.log" \
  --pid-file "$work/nx.pid" > /dev/null 2>&1 &
pids+=($!)
for port in "$redis_port" "$mongo_port"; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

common=(--chunks "$chunks" --tenants "$tenants" --questions "$questions")
RUST_LOG=warn "$bench" --stack embedded "${common[@]}"
RUST_LOG=warn "$bench" --stack shared "${common[@]}" \
  --mongo-url "mongodb://127.0.0.1:$mongo_port" --redis-url "redis://127.0.0.1:$redis_port"
if [ -n "${FIELDVOX_TEST_QDRANT_URL:-}" ]; then
  RUST_LOG=warn "$bench" --stack shared "${common[@]}" --qdrant-url "$FIELDVOX_TEST_QDRANT_URL" \
    --mongo-url "mongodb://127.0.0.1:$mongo_port" --redis-url "redis://127.0.0.1:$redis_port"
fi
