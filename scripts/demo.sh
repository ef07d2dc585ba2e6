#!/usr/bin/env bash
# The demo: a local single-node Swarm (installed and started if needed), the swarmgate stack, and an example
# app routed by its VIRTUAL_HOST label. Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund
# The lab creates the secrets the stack needs (admin and edge tokens, channel key pair, state key).
bash scripts/lab.sh up
docker stack deploy --resolve-image never -c docker-stack.yml swarmgate >/dev/null
docker stack deploy --resolve-image never -c examples/whoami-stack.yml sg-demo >/dev/null

echo "waiting for whoami.localhost to answer through the edge on 127.0.0.1:80 ..."
for _ in $(seq 1 90); do
  if body=$(curl -fsS --max-time 2 -H 'Host: whoami.localhost' http://127.0.0.1/ 2>/dev/null); then
    echo "$body"
    cat <<'TEXT'

swarmgate is running. Try:
  curl -H 'Host: whoami.localhost' http://127.0.0.1/          # answers from one of the replicas
  docker service scale sg-demo_whoami=5                        # new replicas are routed within a second
  docker exec $(docker ps -q -f name=swarmgate_controller) swarmgate status
Remove it all with: npm run lab -- down
TEXT
    exit 0
  fi
  sleep 1
done
echo "whoami.localhost did not answer within 90 s; see: docker service logs swarmgate_controller" >&2
exit 1
