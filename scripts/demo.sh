#!/usr/bin/env bash
# The demo: a local single-node Swarm (installed and started if needed), swarmgate deployed as a user deploys it
# (stack `swarmgate` on ports 80/443, network `swarmgate`, the secrets scripts/create-secrets.sh makes) and an
# example app (stack sg-demo) routed by its VIRTUAL_HOST label.
#
#   scripts/demo.sh [up]   deploys, or updates what an earlier run deployed
#   scripts/demo.sh down   removes the example app, and the swarmgate stack and secrets if the demo made them
#
# What the demo makes carries the label swarmgate.demo=1. A swarmgate stack the demo did not deploy (your own) is
# used as it is: never redeployed or removed, and secrets of those names are never replaced. The e2e lab
# (`npm run lab`, `npm run test:all`) has names of its own and leaves the demo alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_LABEL=swarmgate.demo=1
STACK=swarmgate
APP_STACK=sg-demo

log() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stack_exists() { docker stack ls --format '{{.Name}}' | grep -qx "$1"; }

demo_owns_stack() {
  [ "$(docker service inspect --format '{{index .Spec.Labels "swarmgate.demo"}}' "${STACK}_controller" 2>/dev/null)" = 1 ]
}

wait_gone() {
  local stack=$1
  for _ in $(seq 1 60); do
    [ -z "$(docker service ls -q --filter label=com.docker.stack.namespace="$stack")" ] &&
      [ -z "$(docker network ls -q --filter label=com.docker.stack.namespace="$stack")" ] && return 0
    sleep 1
  done
  log "stack $stack did not go away within 60 s"
  return 1
}

up() {
  [ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund
  bash scripts/lab.sh up
  if stack_exists "$STACK" && ! demo_owns_stack; then
    log "a swarmgate stack the demo did not deploy runs here: the demo uses it as it is"
  else
    # Every secret the stack needs (tokens, state key, the channel key pair), as a user makes them; existing ones
    # (yours, or an earlier demo's) are kept. New ones carry the demo's label, so `down` removes only those.
    bash scripts/create-secrets.sh --label "$DEMO_LABEL"
    # The stack file's defaults (network swarmgate, ports 80/443), whatever this shell exports; the demo's label on
    # both services marks the stack as the demo's.
    env -u SWARMGATE_NETWORK -u SWARMGATE_HTTP_PORT -u SWARMGATE_HTTPS_PORT \
      docker stack deploy --resolve-image never -c docker-stack.yml -c - "$STACK" >/dev/null <<'YAML'
version: '3.8'
services:
  controller:
    deploy:
      labels:
        swarmgate.demo: '1'
  edge:
    deploy:
      labels:
        swarmgate.demo: '1'
YAML
  fi
  docker stack deploy --resolve-image never -c examples/whoami-stack.yml "$APP_STACK" >/dev/null

  echo "waiting for whoami.localhost to answer through the edge on 127.0.0.1:80 ..."
  for _ in $(seq 1 90); do
    if body=$(curl -fsS --max-time 2 -H 'Host: whoami.localhost' http://127.0.0.1/ 2>/dev/null); then
      echo "$body"
      cat <<'TEXT'

swarmgate is running. Try:
  curl -H 'Host: whoami.localhost' http://127.0.0.1/          # answers from one of the replicas
  docker service scale sg-demo_whoami=5                        # new replicas are routed within a second
  docker exec $(docker ps -q -f name=swarmgate_controller) swarmgate status
Remove it with: npm run demo -- down
TEXT
      return 0
    fi
    sleep 1
  done
  echo "whoami.localhost did not answer within 90 s; see: docker service logs --tail 50 swarmgate_controller" >&2
  return 1
}

down() {
  docker info >/dev/null 2>&1 || { log "no Docker daemon answers; nothing to remove"; return 0; }
  if stack_exists "$APP_STACK"; then
    log "removing stack $APP_STACK"
    docker stack rm "$APP_STACK" >/dev/null
    wait_gone "$APP_STACK"
  fi
  if ! stack_exists "$STACK"; then
    :
  elif demo_owns_stack; then
    log "removing stack $STACK"
    docker stack rm "$STACK" >/dev/null
    wait_gone "$STACK"
    # The edge's last bundle: the demo's edge wrote it.
    for _ in $(seq 1 30); do
      docker volume inspect "${STACK}_edge-state" >/dev/null 2>&1 || break
      docker volume rm "${STACK}_edge-state" >/dev/null 2>&1 || sleep 1
    done
  else
    log "the swarmgate stack here is not the demo's: left as it is"
  fi
  local ids
  ids=$(docker secret ls -q --filter label="$DEMO_LABEL")
  # A secret still in use (your stack took it over) stays.
  [ -z "$ids" ] || docker secret rm $ids >/dev/null 2>&1 || true
  log "demo is down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
