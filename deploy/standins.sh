#!/usr/bin/env bash
# docker-compose for deploy/compose.yaml on a machine that can pull no image and has no Docker
# bridge (the development machine; see deploy/compose.standins.yaml). Anywhere else run
# `docker compose -f deploy/compose.yaml ...` directly.
#
#   bash deploy/standins.sh up -d --build     # any docker-compose arguments
#   bash deploy/standins.sh ps
#   bash deploy/standins.sh down -v
#
# It merges compose.yaml with compose.standins.yaml (`config --no-interpolate`), drops the
# published ports of the services that run on the host's network (Docker would ignore them, but
# Compose v1 refuses them beside network_mode: host, and no override can remove a list entry),
# and runs docker-compose (or `docker compose`) on the result, under the project name of
# compose.yaml's directory (`deploy`, like a plain `docker compose -f deploy/compose.yaml`;
# COMPOSE_PROJECT_NAME changes it). Needs python3 with PyYAML (Compose v1 brings both).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
project=${COMPOSE_PROJECT_NAME:-$(basename "$here")}
rendered=$(mktemp "${TMPDIR:-/tmp}/pulltab-compose.XXXXXX.yaml")
trap 'rm -f "$rendered" "$rendered.merged"' EXIT
"${compose[@]}" --project-directory "$here" -f "$here/compose.yaml" -f "$here/compose.standins.yaml" \
  config --no-interpolate >"$rendered.merged"
python3 - "$rendered.merged" >"$rendered" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for service in doc.get("services", {}).values():
    if service.get("network_mode") == "host":
        service.pop("ports", None)
yaml.safe_dump(doc, sys.stdout, sort_keys=False)
EOF
rm -f "$rendered.merged"
"${compose[@]}" -p "$project" --project-directory "$here" -f "$rendered" "$@"
