#!/usr/bin/env bash
# The lab's cleaning leaves a user's deployment alone. This check puts a stand-in for one on the daemon (a stack,
# its network and volume, a secret, sealed-state configs of the default instance and of a controller from before
# SWARMGATE_INSTANCE: none with the lab's marks), runs `scripts/lab.sh clean` or `down`, and fails if any object
# without the lab's marks was removed or changed: the stand-in, and whatever else was there (a demo, a real
# swarmgate). It also fails if the command removed nothing of the lab's, as the check would then prove nothing.
#
#   test/e2e/user-deployment-check.sh snapshot FILE        every object on the daemon now, as a baseline
#   test/e2e/user-deployment-check.sh clean|down [FILE]    the check; objects of a baseline FILE must survive too
#
# The lab's marks are written out here on their own (not taken from lab.sh), so a too-broad rule there fails.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STANDIN=swarmgate-user-standin
LAB=sg-e2e
LAB_ACCOUNT="account.$(printf %s https://pebble:14000/dir | sha256sum | cut -c1-12)"

log() { printf '[user-deployment-check] %s\n' "$*" >&2; }

# One line per object: kind, id, version (what changes when it is updated; networks are never updated, and a
# volume's CreatedAt follows its directory's inode times, so neither has one), name,
# then the labels that decide whether it is the lab's.
snapshot() {
  local ids
  ids=$(docker service ls -q 2>/dev/null || true)
  [ -z "$ids" ] || docker service inspect --format \
    'service {{.ID}} {{.Version.Index}} {{.Spec.Name}} ns={{index .Spec.Labels "com.docker.stack.namespace"}} test={{index .Spec.Labels "sg-e2e"}}' $ids 2>/dev/null || true
  ids=$(docker network ls -q 2>/dev/null || true)
  [ -z "$ids" ] || docker network inspect --format \
    'network {{.Id}} - {{.Name}} ns={{index .Labels "com.docker.stack.namespace"}} test={{index .Labels "sg-e2e"}} lab={{index .Labels "swarmgate.lab"}}' $ids 2>/dev/null || true
  ids=$(docker secret ls -q 2>/dev/null || true)
  [ -z "$ids" ] || docker secret inspect --format \
    'secret {{.ID}} {{.Version.Index}} {{.Spec.Name}} lab={{index .Spec.Labels "swarmgate.lab"}}' $ids 2>/dev/null || true
  ids=$(docker config ls -q 2>/dev/null || true)
  [ -z "$ids" ] || docker config inspect --format \
    'config {{.ID}} {{.Version.Index}} {{.Spec.Name}} instance={{index .Spec.Labels "swarmgate.instance"}} state={{index .Spec.Labels "swarmgate.state"}}' $ids 2>/dev/null || true
  ids=$(docker volume ls -q 2>/dev/null || true)
  [ -z "$ids" ] || docker volume inspect --format \
    'volume {{.Name}} - {{.Name}} ns={{index .Labels "com.docker.stack.namespace"}}' $ids 2>/dev/null || true
}

# Prints the lines of objects that carry one of the lab's marks.
lab_marked() {
  awk -v lab="$LAB" -v account="$LAB_ACCOUNT" '
    # A missing label reads "<no value>" in the templates of untyped objects (networks, volumes).
    function value(key,   i, v) {
      for (i = 5; i <= NF; i++) if (index($i, key "=") == 1) { v = substr($i, length(key) + 2); return v == "<no value>" ? "" : v }
      return ""
    }
    function lab_stack(ns) { return ns == lab || index(ns, lab "-") == 1 }
    ($1 == "service" || $1 == "network") && (lab_stack(value("ns")) || value("test") == "1") { print; next }
    # The multi-node lab'\''s bridge network (scripts/lab-nodes.sh labels everything it makes swarmgate.lab=1).
    $1 == "network" && value("lab") == "1" && $4 == "swarmgate-lab-nodes" { print; next }
    $1 == "volume" && lab_stack(value("ns")) { print; next }
    $1 == "secret" && value("lab") == "1" && index($4, lab "_") == 1 { print; next }
    $1 == "config" && value("instance") == lab { print; next }
    $1 == "config" && value("instance") == "" && value("state") != "" &&
      (value("state") == account || value("state") ~ /^(cert|registry)\..*\.e2e\.test(:[0-9]+)?$/) { print }'
}

create_standin() {
  log "creating the stand-in user deployment ($STANDIN)"
  printf 'not the lab%s' "$RANDOM" | docker secret create --label swarmgate.standin=1 "${STANDIN}_token" - >/dev/null
  # Named like the sealed state of a real swarmgate (the default instance), and like one from before instances.
  printf '{"v":1}' | docker config create --label swarmgate.state=cert.user-standin.example \
    --label swarmgate.state.generation=1 --label swarmgate.instance=swarmgate \
    swarmgate-state-cert.user-standin.example-1 - >/dev/null
  printf '{"v":1}' | docker config create --label swarmgate.state=cert.user-standin-legacy.example \
    --label swarmgate.state.generation=1 swarmgate-state-cert.user-standin-legacy.example-1 - >/dev/null
  docker volume create "${STANDIN}_data" >/dev/null
  docker stack deploy --resolve-image never -c - "$STANDIN" >/dev/null <<YAML
version: '3.8'
services:
  web:
    image: ${SWARMGATE_BACKEND_IMAGE:-swarmgate-test-backend:dev}
    secrets: [token]
    volumes: ['data:/data']
secrets:
  token:
    external: true
    name: ${STANDIN}_token
volumes:
  data:
YAML
  # Swarm moves a new service's version while it allocates it: the snapshot waits until its task runs and its
  # version stands still, so a version moved by Swarm is never blamed on the lab.
  local previous="" current states
  for _ in $(seq 1 60); do
    current=$(docker service inspect --format '{{.Version.Index}}' "${STANDIN}_web" 2>/dev/null || true)
    states=$(docker service ps --filter desired-state=running --format '{{.CurrentState}}' "${STANDIN}_web" 2>/dev/null || true)
    if [ -n "$current" ] && [ "$current" = "$previous" ] && grep -q '^Running' <<<"$states"; then
      return 0
    fi
    previous=$current
    sleep 1
  done
  log "the stand-in's service ${STANDIN}_web did not settle within 60 s"
  exit 1
}

remove_standin() {
  docker stack rm "$STANDIN" >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    [ -z "$(docker service ls -q --filter label=com.docker.stack.namespace="$STANDIN")" ] &&
      [ -z "$(docker network ls -q --filter label=com.docker.stack.namespace="$STANDIN")" ] && break
    sleep 1
  done
  docker secret rm "${STANDIN}_token" >/dev/null 2>&1 || true
  docker config rm swarmgate-state-cert.user-standin.example-1 \
    swarmgate-state-cert.user-standin-legacy.example-1 >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do
    docker volume inspect "${STANDIN}_data" >/dev/null 2>&1 || break
    docker volume rm "${STANDIN}_data" >/dev/null 2>&1 || sleep 1
  done
}

# A config NAME-<n> whose series has a higher generation NAME-<m> in the after snapshot.
superseded() {
  awk -v line="$1" '
    BEGIN { split(line, f, " "); if (f[1] != "config" || !match(f[4], /-[0-9]+$/)) exit 1
            series = substr(f[4], 1, RSTART); generation = substr(f[4], RSTART + 1) + 0 }
    $1 == "config" && index($4, series) == 1 && substr($4, length(series) + 1) ~ /^[0-9]+$/ &&
      substr($4, length(series) + 1) + 0 > generation { found = 1 }
    END { exit !found }' "$2"
}

check() {
  local command=$1 baseline=${2:-} work before after marked failed=0 line key
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # the paths are fixed now
  trap "remove_standin; rm -rf '$work'" EXIT
  remove_standin
  create_standin
  snapshot >"$work/now"
  for line in "service ${STANDIN}_web" "network ${STANDIN}_default" "secret ${STANDIN}_token" \
    "config swarmgate-state-cert.user-standin.example-1" "config swarmgate-state-cert.user-standin-legacy.example-1" \
    "volume ${STANDIN}_data"; do
    awk -v kind="${line%% *}" -v name="${line#* }" '$1 == kind && $4 == name { found = 1 } END { exit !found }' \
      "$work/now" || { log "the stand-in's ${line} was not created"; exit 1; }
  done
  { [ -z "$baseline" ] || cat "$baseline"; cat "$work/now"; } | sort -u >"$work/before"
  lab_marked <"$work/before" >"$work/marked"

  log "running: scripts/lab.sh $command"
  bash "$ROOT/scripts/lab.sh" "$command"
  snapshot | sort -u >"$work/after"

  # Every object without the lab's marks is still there, unchanged (same id and version), or, for a config, was
  # replaced by a later generation: a live swarmgate beside the lab rotates its own (state saves, leases).
  while read -r line; do
    grep -qxF "$line" "$work/marked" && continue
    key=$(awk '{ print $1, $2, $3 }' <<<"$line")
    awk -v key="$key" '$1 " " $2 " " $3 == key { found = 1 } END { exit !found }' "$work/after" && continue
    superseded "$line" "$work/after" && continue
    log "removed or changed, and not the lab's: $line"
    failed=1
  done <"$work/before"
  # The command did remove something of the lab's.
  if ! awk 'NR == FNR { after[$1 " " $2] = 1; next } !(($1 " " $2) in after) { found = 1 } END { exit !found }' \
    "$work/after" "$work/marked"; then
    log "scripts/lab.sh $command removed nothing of the lab's: this check proves nothing"
    failed=1
  fi
  [ "$failed" = 0 ] || exit 1
  log "ok: $(wc -l <"$work/marked") objects of the lab's were there, $(($(wc -l <"$work/before") - $(wc -l <"$work/marked"))) others; every other one is untouched"
}

case "${1:-}" in
  snapshot) [ -n "${2:-}" ] || { echo "usage: $0 snapshot FILE" >&2; exit 2; }; snapshot >"$2" ;;
  clean | down) check "$1" "${2:-}" ;;
  *) echo "usage: $0 snapshot FILE | clean|down [BASELINE]" >&2; exit 2 ;;
esac
