#!/usr/bin/env bash
# Builds the Docker image and checks it the way an operator would use it:
#   - its size against the base image's, and that it holds no dev dependencies or sources;
#   - it runs as the non-root user, and /metrics (the image's default metrics host) listens
#     on every address, not only loopback;
#   - the health check goes healthy;
#   - a message goes through it with the CLI (the clone's dist/, on the host);
#   - `docker stop` drains gracefully: the connected client is told GOING_AWAY, exit status 0;
#   - a replacement container on the same volume keeps the relay key (same address) and the
#     mailboxes (a stored message is delivered after the replacement).
# Needs Docker, node:MAJOR-bookworm-slim (on this machine: ../shared/tools/docker-base.sh)
# and `npm ci` done in the clone. Not part of `npm test`: it takes minutes (most of them the
# build). Usage: bash scripts/docker-check.sh   (NODE_MAJOR=N to build on another Node line;
# IMAGE=name:tag to name the image, kept afterwards; the containers and volume are removed).
# Containers use the host's network (this machine has no Docker bridge), on free ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
node_major=${NODE_MAJOR:-24}
image=${IMAGE:-pulltab:check}
base="node:$node_major-bookworm-slim"
run_id="pulltab-check-$$"
volume="$run_id-data"
work=$(mktemp -d "${TMPDIR:-/tmp}/$run_id.XXXXXX")
listen_pid=
cleanup() {
  if [ -n "$listen_pid" ]; then kill "$listen_pid" 2>/dev/null || true; fi
  docker rm -f "$run_id-a" "$run_id-b" >/dev/null 2>&1 || true
  docker volume rm "$volume" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "docker-check: $*"; }
fail() { echo "docker-check: FAIL: $*" >&2; exit 1; }
cli() { node "$root/dist/cli/main.js" "$@"; }
metric() { # NAME: its value on the relay's /metrics
  node -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => {
    const line = t.split("\n").find((l) => l.startsWith(process.argv[2] + " "));
    console.log(line ? line.slice(process.argv[2].length + 1) : "");
  }, () => console.log(""))' "http://127.0.0.1:$metrics_port/metrics" "$1"
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

docker info >/dev/null 2>&1 || fail "no Docker daemon (on this machine: ../shared/tools/docker-base.sh)"
docker image inspect "$base" >/dev/null 2>&1 || fail "no $base image (on this machine: ../shared/tools/docker-base.sh)"
[ -d node_modules ] || fail "run npm ci first (the host side uses the clone's CLI)"
npx tsc -p tsconfig.build.json || fail "the host CLI does not build"
version=$(node -p "require('./package.json').version")

# --- build and size ------------------------------------------------------------------------
step "docker build ($base) -> $image"
started=$(date +%s)
docker build --network host --build-arg "NODE_MAJOR=$node_major" -t "$image" . >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; fail "docker build"; }
grep -m1 '^lmdb loads on node' "$work/build.log" | sed 's/^/docker-check:   build: /' || true
step "built in $(( $(date +%s) - started )) s"
image_bytes=$(docker image inspect -f '{{.Size}}' "$image")
base_bytes=$(docker image inspect -f '{{.Size}}' "$base")
added=$(( image_bytes - base_bytes ))
step "image size $(mb "$image_bytes"), base $base $(mb "$base_bytes"): the relay adds $(mb "$added")"
docker history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | awk -F'\t' '$1 != "0B"' | head -n 4 \
  | cut -c1-110 | sed 's/^/docker-check:   layer /'
# What the relay adds is its production node_modules and dist/ (about 17 MB); a regression that
# ships dev dependencies (typescript, tap: over 100 MB) or the sources trips these checks.
[ "$added" -lt 40000000 ] || fail "the image adds $(mb "$added") to its base; expected under 40 MB"
docker run --rm --network none --entrypoint sh "$image" -c '
  for p in /app/src /app/test /app/node_modules/typescript /app/node_modules/tap /app/node_modules/@types; do
    [ ! -e "$p" ] || { echo "present: $p"; exit 1; }
  done
  [ -z "$(find /app -name "*.map" -o -name "*.ts" | head -n 1)" ] || { echo "source maps or .ts present"; exit 1; }' \
  || fail "the image carries dev dependencies or sources"
[ "$(docker run --rm --network none "$image" --version)" = "$version" ] || fail "pulltab --version in the image is not $version"
step "the image holds no dev dependencies, sources or maps; pulltab --version: $version"

# --- run -----------------------------------------------------------------------------------
read -r port metrics_port < <(node -e '
  const net = require("node:net");
  const free = () => new Promise((r) => { const s = net.createServer().listen(0, () => { const p = s.address().port; s.close(() => r(p)); }); });
  Promise.all([free(), free()]).then((p) => console.log(p.join(" ")));')
docker volume create "$volume" >/dev/null
start_container() { # NAME: runs the image with its defaults but the ports, on the test volume
  docker run -d --name "$1" --network host -v "$volume:/data" \
    -e "PULLTAB_PORT=$port" -e "PULLTAB_METRICS_PORT=$metrics_port" "$image" >/dev/null
  local address=
  for _ in $(seq 1 150); do
    address=$(docker logs "$1" 2>/dev/null | head -n 1 | grep -E '^pulltab://' || true)
    [ -n "$address" ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ] || { docker logs "$1" >&2; fail "container $1 exited"; }
    sleep 0.2
  done
  [ -n "$address" ] || { docker logs "$1" >&2; fail "container $1 printed no address in 30 s"; }
  echo "$address"
}
a="$run_id-a"
address=$(start_container "$a")
step "container $a: $address (metrics on port $metrics_port)"

uid=$(docker exec "$a" awk '/^Uid:/ { print $2 }' /proc/1/status)
[ "$uid" = 2652 ] || fail "the relay (pid 1) runs as uid $uid, not 2652"
perms=$(docker exec "$a" stat -c '%U %a' /data /data/relay-identity.json | tr '\n' ' ')
[ "$perms" = "pulltab 700 pulltab 600 " ] || fail "/data and its identity are '$perms', expected pulltab 700 and pulltab 600"
step "runs as $(docker exec "$a" id -un) (uid $uid); /data is mode 700 and relay-identity.json 600, both the user's"

[ "$(docker exec "$a" printenv PULLTAB_METRICS_HOST)" = 0.0.0.0 ] || fail "the image's PULLTAB_METRICS_HOST is not 0.0.0.0"
# The listener must be bound to every address (0.0.0.0), not the container's loopback. Checked in
# the kernel's socket table rather than by connecting to a non-loopback address: this check only
# ever talks to loopback.
hex_port=$(printf '%04X' "$metrics_port")
grep -qE "^ *[0-9]+: 00000000:$hex_port 00000000:0000 0A " /proc/net/tcp \
  || fail "the metrics listener on port $metrics_port is not bound to 0.0.0.0"
step "/metrics listens on 0.0.0.0:$metrics_port (the kernel's socket table), so it is reachable from outside the container"

started=$(date +%s)
health=
for _ in $(seq 1 90); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$a")
  [ "$health" = healthy ] && break
  [ "$health" = unhealthy ] && break
  sleep 1
done
[ "$health" = healthy ] || { docker inspect -f '{{json .State.Health}}' "$a" >&2; fail "health check is '$health' after 90 s"; }
step "health check: healthy after $(( $(date +%s) - started )) s (the first check runs 30 s after start)"

# --- a message through it ------------------------------------------------------------------
cd "$work"
alice=$(cli keygen --out alice.key)
bob=$(cli keygen --out bob.key)
carol=$(cli keygen --out carol.key)
cli listen --relay "$address" --key bob.key --timeout 90 --json >bob.out 2>bob.err &
listen_pid=$!
# Send once bob is connected (the relay's gauge says so), so that the message goes live.
for _ in $(seq 1 50); do [ "$(metric 'pulltab_connections{state="authenticated"}')" = 1 ] && break; sleep 0.2; done
cli send --relay "$address" --key alice.key --to "$bob" 'hello through the container' 2>send.err || { cat send.err >&2; fail "pulltab send"; }
for _ in $(seq 1 50); do grep -q 'hello through the container' bob.out && break; sleep 0.2; done
grep -q "\"from\":\"$alice\",\"body\":\"hello through the container\"" bob.out || { cat bob.out bob.err >&2; fail "bob did not receive the message"; }
step "pulltab send (host) -> relay in the container -> pulltab listen (host): $(sed -n 's/.*\(delivered[^,]*\).*/\1/p' send.err | head -n 1)"
cli send --relay "$address" --key alice.key --to "$carol" --store 'kept across the replacement' 2>store.err \
  || { cat store.err >&2; fail "pulltab send --store"; }
grep -q stored store.err || { cat store.err >&2; fail "the message for carol (offline) was not stored"; }
step "a message for carol (offline) stored"

# --- graceful stop -------------------------------------------------------------------------
started=$(date +%s%N)
docker stop -t 30 "$a" >/dev/null
stop_ms=$(( ($(date +%s%N) - started) / 1000000 ))
# The listener is told GOING_AWAY, says so on stderr, and would reconnect (until its --timeout).
for _ in $(seq 1 100); do grep -qi 'going.away' bob.err && break; sleep 0.2; done
kill "$listen_pid" 2>/dev/null || true
wait "$listen_pid" 2>/dev/null || true
listen_pid=
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$a")
[ "$exit_code" = 0 ] || { docker logs "$a" | tail -5 >&2; fail "the relay exited $exit_code on docker stop"; }
docker logs "$a" 2>&1 | grep -q '"event":"shutdown","signal":"SIGTERM"' || fail "no shutdown event for SIGTERM in the log"
if docker logs "$a" 2>&1 | grep -q '"event":"shutdown_deadline"'; then fail "the drain hit its deadline"; fi
grep -qi 'going.away' bob.err || { cat bob.err >&2; fail "the connected listener was not told GOING_AWAY"; }
step "docker stop: exit status 0 in $stop_ms ms; log: $(docker logs "$a" 2>&1 | grep -o '"event":"shutdown"[^}]*' | head -n 1); listener: $(head -n 1 bob.err)"

# --- replacement on the same volume --------------------------------------------------------
docker rm "$a" >/dev/null
b="$run_id-b"
address_b=$(start_container "$b")
[ "$address_b" = "$address" ] || fail "the replacement's address $address_b differs from $address: relay key not kept"
step "replacement $b on the same volume: same address (relay key kept)"
heard=$(cli listen --relay "$address" --key carol.key --until-empty --timeout 20 --json) || fail "carol's listen"
grep -q "\"from\":\"$alice\",\"body\":\"kept across the replacement\".*\"fromMailbox\":true" <<<"$heard" \
  || { echo "$heard" >&2; fail "carol did not get the stored message after the replacement"; }
step "carol received the message stored before the replacement, from the mailbox"
docker stop -t 30 "$b" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "$b")" = 0 ] || fail "the replacement exited non-zero on docker stop"
step "OK ($image, node $(docker run --rm --network none --entrypoint node "$image" --version))"
