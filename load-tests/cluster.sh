#!/usr/bin/env bash
# The scale-out path, run for real on one machine: three fieldvox instances, each in its
# own network namespace (ip netns, veth pairs on a bridge), behind nginx, sharing Redis
# (cache, parked sessions, rate limits) and a MongoDB wire-protocol server (nx-27017: the
# manuals' metadata and keyword index). A talk load runs through nginx; one instance is
# drained mid-run with SIGTERM, and its clients, told `session.going_away`, connect again
# through nginx and ask their next question on another instance.
#
#   sudo load-tests/cluster.sh [--sessions 60] [--hold-secs 90] [--drain-after-secs 30]
#                              [--interval-secs 10] [--port 8095] [--report FILE] [--no-build]
#
# Vectors: each instance keeps its own qdrant-edge index (no Qdrant server runs on these
# machines); the manual is ingested once and its index copied to the other two, so all
# three answer from the same vectors. Every instance runs the load-test reference
# providers (fieldvox-reference) on its own loopback, as with load-tests/run.sh.
# Needs root (network namespaces) and nginx (scripts/setup.sh installs it). --no-build runs
# what is built already (the test suite's load-tests/tests/cluster.rs does).
set -euo pipefail
cd "$(dirname "$0")/.."

sessions=60 hold=90 drain_after=30 interval=10 port=8095 report="" build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) sessions="$2"; shift 2 ;;
    --hold-secs) hold="$2"; shift 2 ;;
    --drain-after-secs) drain_after="$2"; shift 2 ;;
    --interval-secs) interval="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --report) report="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "cluster.sh needs root for network namespaces (sudo)" >&2; exit 1; }
command -v ip > /dev/null || { echo "cluster.sh needs iproute2 (ip)" >&2; exit 1; }

source scripts/env.sh
if [ "$build" = 1 ]; then
  scripts/setup.sh > /dev/null
  scripts/build.sh
fi
command -v nginx > /dev/null || { echo "cluster.sh needs nginx: run scripts/setup.sh" >&2; exit 1; }
bin="$CARGO_TARGET_DIR/debug"
venv="$FIELDVOX_CACHE/venv/bin"
work=$(mktemp -d /tmp/fieldvox-cluster-XXXX)
bridge=fvbr0
host_ip=10.77.0.1
ip_of() { echo "10.77.0.1$1"; }
pids=()
log() { echo "[cluster $(date +%T)] $*" >&2; }

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in 1 2 3; do ip netns del "fv$n" 2>/dev/null || true; done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_tcp() { # host port what
  for _ in $(seq 1 100); do (exec 3<> "/dev/tcp/$1/$2") 2> /dev/null && return 0; sleep 0.2; done
  echo "$3 did not come up on $1:$2" >&2; exit 1
}

log "network: bridge $bridge $host_ip/24, namespaces fv1..fv3 at $(ip_of 1)..$(ip_of 3)"
# What a run killed before its cleanup left behind.
for n in 1 2 3; do ip netns del "fv$n" 2>/dev/null || true; done
ip link del "$bridge" 2>/dev/null || true
ip link add "$bridge" type bridge
ip addr add "$host_ip/24" dev "$bridge"
ip link set "$bridge" up
for n in 1 2 3; do
  ip netns add "fv$n"
  ip link add "fv$n-h" type veth peer name "fv$n-n"
  ip link set "fv$n-h" master "$bridge" up
  ip link set "fv$n-n" netns "fv$n"
  ip -n "fv$n" addr add "$(ip_of "$n")/24" dev "fv$n-n"
  ip -n "fv$n" link set "fv$n-n" up
  ip -n "fv$n" link set lo up
done

log "shared services on $host_ip: redis-server, nx-27017"
mkdir -p "$work/redis" "$work/nx"
redis-server --port 6379 --bind "$host_ip" --protected-mode no --save '' --appendonly no \
  --dir "$work/redis" --logfile "$work/redis/redis.log" > /dev/null 2>&1 &
pids+=($!)
"$venv/nx-27017" --data-dir "$work/nx" --host "$host_ip" -p 27017 --log-file "$work/nx/nx.log" \
  --pid-file "$work/nx/nx.pid" > "$work/nx/stdout.log" 2>&1 &
pids+=($!)
wait_tcp "$host_ip" 6379 redis-server
wait_tcp "$host_ip" 27017 nx-27017

# The same settings for every instance: shared backends, one resume secret (any instance
# takes back another's parked session), limits lifted for thousands of simulated users.
export FIELDVOX__BACKENDS__METADATA=mongodb FIELDVOX__BACKENDS__VECTORS=edge
export FIELDVOX__BACKENDS__CACHE=redis FIELDVOX__BACKENDS__SESSIONS=redis FIELDVOX__BACKENDS__LIMITS=redis
export FIELDVOX__BACKENDS__MONGODB__URL="mongodb://$host_ip:27017" FIELDVOX__BACKENDS__MONGODB__DATABASE=fieldvox
export FIELDVOX__BACKENDS__REDIS__URL="redis://$host_ip:6379"
export FIELDVOX__SERVER__RESUME_SECRET="cluster-resume-secret-$(date +%s%N)"
export FIELDVOX__SERVER__SHUTDOWN_GRACE_MS=15000
export FIELDVOX__PIPELINES__DEFAULT=load-reference
export FIELDVOX__SERVER__MAX_UNAUTHENTICATED_PER_IP=1000000
export FIELDVOX__LIMITS__CONNECTION_ATTEMPTS=100000000/min
for limit in SESSION_OPENS TURNS SEARCHES; do export "FIELDVOX__LIMITS__TENANT__$limit=100000000/min"; done
export FIELDVOX__LIMITS__TENANT__AUDIO_SECONDS=100000000/h

log "manual ingested once (metadata to nx-27017), its vector index copied to every instance"
FIELDVOX__DATA__DIR="$work/fv1" "$bin/fieldvox" ingest tests/fixtures/rtu40-service-manual.txt --tenant acme \
  --equipment RTU-40 --title "RTU-40 Service Manual" > /dev/null
for n in 2 3; do mkdir -p "$work/fv$n" && cp -r "$work/fv1/vectors" "$work/fv$n/"; done

instance_pid=()
for n in 1 2 3; do
  ip netns exec "fv$n" "$bin/fieldvox-reference" > "$work/reference-$n.log" 2>&1 &
  pids+=($!)
  ip netns exec "fv$n" env FIELDVOX__DATA__DIR="$work/fv$n" RUST_LOG="${RUST_LOG:-warn}" \
    "$bin/fieldvox" serve --dev --listen 0.0.0.0:8080 > "$work/fieldvox-$n.log" 2>&1 &
  instance_pid[$n]=$!
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 1 240); do curl -fsS "http://$(ip_of "$n"):8080/readyz" > /dev/null 2>&1 && break; sleep 0.5; done
  curl -fsS "http://$(ip_of "$n"):8080/readyz" > /dev/null || { cat "$work/fieldvox-$n.log"; exit 1; }
done
log "three instances ready"

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    upstream fieldvox {
        least_conn;
        server $(ip_of 1):8080 max_fails=1 fail_timeout=30s;
        server $(ip_of 2):8080 max_fails=1 fail_timeout=30s;
        server $(ip_of 3):8080 max_fails=1 fail_timeout=30s;
    }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://fieldvox;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            # A draining instance refuses new sessions (503 draining): try the next one.
            proxy_next_upstream error timeout http_503;
            proxy_read_timeout 900s;
        }
    }
}
EOF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_tcp 127.0.0.1 "$port" nginx

sessions_on() { curl -fsS "http://$(ip_of "$1"):8080/metrics" -H "Authorization: Bearer $ops_token" 2>/dev/null \
  | awk '/^fieldvox_sessions_active\{transport="websocket"\}/ {print $2}'; }
ops_token=$("$bin/fieldvox" token --tenant platform --user cluster --role ops)

log "talk load through nginx: $sessions sessions, one question per ${interval}s each, ${hold}s"
"$bin/fieldvox-load" --url "ws://127.0.0.1:$port/v1/realtime" --scenario talk --sessions "$sessions" \
  --ramp 20 --interval-secs "$interval" --hold-secs "$hold" --pipeline load-reference \
  ${report:+--report "$report"} > "$work/load.txt" &
load=$!
sleep "$drain_after"
log "sessions per instance before the drain: $(for n in 1 2 3; do printf '%s=%s ' "fv$n" "$(sessions_on "$n")"; done)"
log "draining instance fv2 (SIGTERM)"
drain_start=$(date +%s.%N)
kill -TERM "${instance_pid[2]}"
wait "${instance_pid[2]}" || true
log "fv2 exited after $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $drain_start }") s"
sleep 5
log "sessions per instance after the drain: $(for n in 1 3; do printf '%s=%s ' "fv$n" "$(sessions_on "$n")"; done)"
wait "$load"
cat "$work/load.txt"
