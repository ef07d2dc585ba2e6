#!/usr/bin/env bash
# Every test swarmgate has, from a fresh clone: host prerequisites, npm ci, npm test (lint, types, format,
# unit, golden, integration), the lab (a real single-node Swarm), the e2e suite, the benchmark smoke runs and
# `lab down`. Under CI=true a skipped e2e test fails the run. Prints the time of each phase.
#
# The daemon may hold a real swarmgate or the demo (stack `swarmgate` on ports 80/443): the lab has names and ports
# of its own and leaves them alone. The last phase checks that: every object that was on the daemon before the
# run and does not carry the lab's marks, and a stand-in user deployment, are still there, unchanged, after
# `lab down` (test/e2e/user-deployment-check.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -a PHASES=()
phase() {
  local name=$1 start=$SECONDS
  shift
  printf '\n=== %s ===\n' "$name"
  "$@"
  PHASES+=("$(printf '%-28s %5d s' "$name" $((SECONDS - start)))")
}

host_prerequisites() {
  # Chromium: the status page's browser tests (test/integration/status-page.test.ts, driven by playwright-core);
  # under CI=true they fail rather than skip without it. certutil (libnss3-tools): the lab's browser test
  # (test/e2e/status-page.test.ts) trusts Pebble's root in the browser's own store. ab (apache2-utils):
  # bench/metrics-cost.ts.
  if ! command -v chromium >/dev/null 2>&1 || ! command -v ab >/dev/null 2>&1 || ! command -v certutil >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 ||
      { echo "install chromium, libnss3-tools and apache2-utils, then run this again" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium libnss3-tools apache2-utils >/dev/null
  fi
  chromium --version
  # nginx with its Lua module, and its stream module with njs (TCP ports, TLS passthrough): every golden output
  # must pass `nginx -t`. Debian's policy may start the service on install; the edge publishes port 80 on this
  # machine, so it is stopped if it did.
  if ! command -v nginx >/dev/null 2>&1 || [ ! -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] ||
    [ ! -f /usr/lib/nginx/modules/ngx_stream_js_module.so ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 ||
      { echo "install nginx, libnginx-mod-http-lua, libnginx-mod-stream and libnginx-mod-stream-js, then run this again" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx libnginx-mod-http-lua \
      libnginx-mod-stream libnginx-mod-stream-js >/dev/null
    if pgrep -x nginx >/dev/null 2>&1 && [ -z "$(docker ps -q 2>/dev/null)" ]; then
      nginx -s stop 2>/dev/null || true
    fi
  fi
  nginx -v
}

e2e() {
  local log=.lab/e2e.log
  mkdir -p .lab
  set +e
  npm run test:e2e 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  [ "$status" = 0 ] || return "$status"
  if [ "${CI:-}" = true ] && ! grep -Eq '^ℹ skipped 0$' "$log"; then
    echo "CI: an e2e test was skipped; in CI every e2e test must run" >&2
    return 1
  fi
  if grep -Eq '^ℹ tests 0$' "$log"; then
    echo "no e2e test ran" >&2
    return 1
  fi
}

total_start=$SECONDS
mkdir -p .lab
# What was on the daemon before this run (nothing, on a fresh machine without one).
if timeout 10 docker info >/dev/null 2>&1; then
  bash test/e2e/user-deployment-check.sh snapshot .lab/before-test-all.txt
else
  : >.lab/before-test-all.txt
fi
phase "host prerequisites" host_prerequisites
phase "npm ci" npm ci --no-audit --no-fund
phase "npm test" npm test
phase "lab up" npm run lab -- up
# The host's nginx may lack http_v3: every golden config, QUIC lines included, through the edge image's nginx.
phase "goldens, image nginx" npm run test:golden-image-nginx
phase "e2e" e2e
phase "e2e multi-node" bash -c 'bash scripts/lab-nodes.sh up 3 && npm run test:e2e-multinode; status=$?; bash scripts/lab-nodes.sh down; exit $status'
if [ -f bench/run-all.ts ]; then phase "bench smoke" npm run bench -- --smoke; fi
phase "lab down, user untouched" bash test/e2e/user-deployment-check.sh down .lab/before-test-all.txt

printf '\n=== timings ===\n'
printf '%s\n' "${PHASES[@]}"
printf '%-28s %5d s\n' "total" $((SECONDS - total_start))
