#!/usr/bin/env bash
# Brings up deploy/compose.yaml (two relays, NATS, PostgreSQL) and checks it the way
# docs/OPERATIONS.md ("Running a cluster", "With Docker Compose") uses it:
#   - both relays turn healthy (/readyz) and print one relay key, the one cluster-init made;
#   - the identity copies and the passfile are mode 0600 and the relay's user's; neither the
#     PostgreSQL password nor the relay's secret key is in any log or `docker inspect`;
#   - `pulltab send` to relay1 reaches `pulltab listen` on relay2 (one forward over NATS);
#   - a `--store` message for an offline recipient sent through relay1 survives `docker kill`
#     of relay1 and is read once through relay2;
#   - a relay process killed with SIGKILL from outside is restarted by Docker (restart policy);
#   - `stop` ends the relays with exit status 0 (SIGTERM drain).
# The host side uses the clone's CLI (dist/; `npx tsc -p tsconfig.build.json` if missing).
# On a machine that can pull no image and has no Docker bridge (the development machine) it goes
# through deploy/standins.sh (STANDINS=1, the default; ports 26652/26653, metrics
# 29652/29653); STANDINS=0 uses deploy/compose.yaml alone (ports 2652/2653, 9652/9653).
# Project `pulltab-check` (COMPOSE_PROJECT_NAME), removed with its volumes at the end.
# Not part of `npm test`: it takes minutes (most of them the image build; BUILD=0 uses the
# images as they are). Usage: bash deploy/compose-check.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pulltab-check}
project=$COMPOSE_PROJECT_NAME
if [ "${STANDINS:-1}" = 1 ]; then
  compose=(bash "$root/deploy/standins.sh"); port1=26652 port2=26653 metrics1=29652 metrics2=29653
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose -f "$root/deploy/compose.yaml"); port1=2652 port2=2653 metrics1=9652 metrics2=9653
else
  compose=(docker-compose -f "$root/deploy/compose.yaml"); port1=2652 port2=2653 metrics1=9652 metrics2=9653
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/pulltab-compose-check.XXXXXX")
listen_pid=
cleanup() {
  if [ -n "$listen_pid" ]; then kill "$listen_pid" 2>/dev/null || true; fi
  "${compose[@]}" down -v --remove-orphans >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "compose-check: $*"; }
fail() { echo "compose-check: FAIL: $*" >&2; exit 1; }
cli() { node "$root/dist/cli/main.js" "$@"; }
declare -A ids=()
cid() { echo "${ids[$1]}"; }  # the service's container, found once after the first up
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(cid "$1")"; }
wait_healthy() { # SERVICE...: within 120 s
  for _ in $(seq 1 120); do
    local all=yes
    for s in "$@"; do [ "$(health "$s")" = healthy ] || all=; done
    [ -n "$all" ] && return 0
    sleep 1
  done
  for s in "$@"; do docker logs --tail 20 "$(cid "$s")" >&2 || true; done
  fail "not healthy within 120 s: $*"
}
metric() { # PORT NAME: its value on that /metrics
  node -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => {
    const line = t.split("\n").find((l) => l.startsWith(process.argv[2] + " "));
    console.log(line ? line.slice(process.argv[2].length + 1) : "");
  }, () => console.log(""))' "http://127.0.0.1:$1/metrics" "$2"
}

docker info >/dev/null 2>&1 || fail "no Docker daemon (on this machine: ../shared/tools/docker-base.sh)"
[ -f dist/cli/main.js ] || npx tsc -p tsconfig.build.json || fail "the host CLI does not build"

build=(--build); [ "${BUILD:-1}" = 1 ] || build=()
step "${compose[*]} up -d${build[*]:+ ${build[*]}} (project $project)"
started=$(date +%s)
"${compose[@]}" up -d "${build[@]}" >"$work/up.log" 2>&1 || { tail -30 "$work/up.log" >&2; fail "up"; }
for s in relay1 relay2; do ids[$s]=$("${compose[@]}" ps -q "$s"); done
wait_healthy relay1 relay2
step "relay1 and relay2 healthy $(( $(date +%s) - started )) s after up"
"${compose[@]}" logs --no-color cluster-init 2>/dev/null | grep -o 'cluster-init: .*' | sed 's/^/compose-check:   /'
relay_key=$("${compose[@]}" logs --no-color cluster-init 2>/dev/null | grep -o 'relay key [^ ]*' | tail -1 | cut -d' ' -f3)
first_address() { docker logs "$(cid "$1")" 2>/dev/null | awk '/^pulltab:\/\// && !n { print; n = 1 }'; }
address1=$(first_address relay1)
address2=$(first_address relay2)
step "relay1 prints $address1"
step "relay2 prints $address2"
case "$address1 $address2" in
  "pulltab://$relay_key@"*" pulltab://$relay_key@"*) ;;
  *) fail "the relays do not print the relay key cluster-init made ($relay_key)" ;;
esac
for s in relay1 relay2; do
  modes=$(docker exec "$(cid "$s")" stat -c '%a %U %n' /data /data/relay-identity.json /run/pulltab-pg/pgpass | tr '\n' ',')
  [ "$modes" = "700 pulltab /data,600 pulltab /data/relay-identity.json,600 pulltab /run/pulltab-pg/pgpass," ] \
    || fail "$s: modes $modes"
done
step "in each relay: /data 700, relay-identity.json 600 and the passfile 600, all the relay user's"
docker run --rm --user root --network none --entrypoint sh -v "${project}_pg-secrets:/s:ro" -v "${project}_identity:/i:ro" \
  pulltab:latest -c 'cat /s/pg-password; echo; node -p "JSON.parse(require(\"fs\").readFileSync(\"/i/relay-identity.json\")).secretKey"' \
  >"$work/secrets"
[ "$(grep -c . "$work/secrets")" = 2 ] || fail "could not read the secrets back"
"${compose[@]}" logs --no-color >"$work/logs" 2>&1
docker inspect $("${compose[@]}" ps -q) >"$work/inspect"
if grep -q -F -f "$work/secrets" "$work/logs" "$work/inspect"; then fail "a secret is in a log or in docker inspect"; fi
rm -f "$work/secrets"
step "neither the PostgreSQL password nor the relay's secret key is in the logs or docker inspect"

relay1="pulltab://$relay_key@127.0.0.1:$port1"
relay2="pulltab://$relay_key@127.0.0.1:$port2"
for who in alice bob carol; do cli keygen --out "$work/$who.key" >/dev/null; done
bob=$(cli id --key "$work/bob.key"); carol=$(cli id --key "$work/carol.key")
cli listen --relay "$relay2" --key "$work/bob.key" --count 1 --timeout 30 >"$work/bob.out" 2>"$work/bob.err" &
listen_pid=$!
for _ in $(seq 1 100); do [ "$(metric "$metrics1" pulltab_presence_remote_keys)" = 1 ] && break; sleep 0.1; done
[ "$(metric "$metrics1" pulltab_presence_remote_keys)" = 1 ] || fail "relay1 never learnt of bob's connection to relay2"
sent=$(cli send --relay "$relay1" --key "$work/alice.key" --to "$bob" 'hello Bob, from relay1' 2>&1)
wait "$listen_pid" || { cat "$work/bob.err" >&2; fail "bob's listen on relay2"; }
listen_pid=
grep -q ': hello Bob, from relay1$' "$work/bob.out" || fail "bob got: $(cat "$work/bob.out")"
step "send to relay1 (${sent#*: }) -> listen on relay2: $(cat "$work/bob.out" | cut -d: -f2- | sed 's/^ //')"
step "  forwards: relay1 pulltab_forwards_total $(metric "$metrics1" pulltab_forwards_total), relay2 pulltab_forwards_received_total $(metric "$metrics2" pulltab_forwards_received_total)"

sent=$(cli send --relay "$relay1" --key "$work/alice.key" --to "$carol" --store 'for Carol, stored through relay1' 2>&1)
[ "$sent" = "$carol: stored" ] || fail "store for carol: $sent"
step "--store to carol (offline) through relay1: stored"
docker kill "$(cid relay1)" >/dev/null
step "docker kill relay1: $(docker inspect -f '{{.State.Status}}' "$(cid relay1)") (exit $(docker inspect -f '{{.State.ExitCode}}' "$(cid relay1)"); a killed container is not restarted)"
cli listen --relay "$relay2" --key "$work/carol.key" --until-empty --timeout 30 >"$work/carol.out"
[ "$(cat "$work/carol.out")" = "$(cli id --key "$work/alice.key"): for Carol, stored through relay1" ] \
  || fail "carol on relay2 got: $(cat "$work/carol.out")"
cli listen --relay "$relay2" --key "$work/carol.key" --until-empty --timeout 30 >"$work/carol2.out"
[ ! -s "$work/carol2.out" ] || fail "carol got it again: $(cat "$work/carol2.out")"
step "carol on relay2 (--until-empty): the message, once; a second listen: nothing"

"${compose[@]}" up -d >"$work/up2.log" 2>&1 || { tail -30 "$work/up2.log" >&2; fail "up again"; }
wait_healthy relay1
step "up -d again: relay1 healthy"
pid=$(docker inspect -f '{{.State.Pid}}' "$(cid relay1)")
kill -9 "$pid"
for _ in $(seq 1 30); do [ "$(docker inspect -f '{{.RestartCount}}' "$(cid relay1)")" -ge 1 ] && break; sleep 1; done
wait_healthy relay1
step "kill -9 of relay1's process (pid $pid on the host): restarted by Docker (restarts $(docker inspect -f '{{.RestartCount}}' "$(cid relay1)")), healthy again"

started=$(date +%s%N)
"${compose[@]}" stop >"$work/stop.log" 2>&1 || { cat "$work/stop.log" >&2; fail "stop"; }
codes=$(for s in relay1 relay2; do docker inspect -f '{{.State.ExitCode}}' "$(cid "$s")"; done | tr '\n' ' ')
[ "$codes" = "0 0 " ] || fail "relays' exit status after stop: $codes"
step "stop: relays exit status 0 0 in $(( ($(date +%s%N) - started) / 1000000 )) ms"
step "OK"
