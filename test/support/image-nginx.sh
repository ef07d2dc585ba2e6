#!/bin/sh
# The edge image's nginx (built with http_v3, which the host's Debian 12 nginx lacks), for `nginx -t` of configs
# rendered on the host: SWARMGATE_NGINX=test/support/image-nginx.sh node --test test/golden/golden.test.ts.
# It uses the Docker daemon: on a shared lab, run it under the lab's lock. The candidate's directory (under the
# temp dir), the test certificate (test/fixtures) and the stream balancer (njs/) are mounted read-only at the same paths; no network.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=${TMPDIR:-/tmp}
exec docker run --rm --network none \
  -v "$tmp:$tmp:ro" -v "$repo/test/fixtures:$repo/test/fixtures:ro" -v "$repo/njs:$repo/njs:ro" \
  --entrypoint nginx "${SWARMGATE_IMAGE:-swarmgate:dev}" "$@"
