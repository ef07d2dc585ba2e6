# swarmgate: one image, two roles (controller | edge), chosen by the command.
# The TypeScript sources are compiled to JavaScript in a build stage: Node could run them directly (type stripping),
# but its stripper costs the controller about 40 MB of memory.
FROM node:24-trixie-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=npm_ca \
    NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

FROM node:24-trixie-slim

# nginx from Debian trixie (1.26: http2, http3, realip, auth_request) with its Lua module (the balancer that takes
# new task addresses without a reload), and its stream module with njs 0.8 (TCP ports and TLS passthrough, whose
# balancer is njs: Debian has no Lua for stream); tini reaps nginx and forwards signals; curl is the stack's health
# probe; iproute2's ss finds and cuts the edge's connections to tasks on a dead node (src/edge/stuck-connections.ts);
# openssl makes the placeholder certificate below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx libnginx-mod-http-lua libnginx-mod-stream \
      libnginx-mod-stream-js ca-certificates tini curl iproute2 openssl \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && mkdir -p /var/lib/swarmgate /var/cache/swarmgate

# The default server of 443 holds this certificate while hosts' certificates are picked by name (nginx wants one
# there); it is never sent. Self-signed for a name that cannot exist, made here, so each image build has its own key,
# and root's only like every key the edge holds.
RUN mkdir -p /app/tls \
 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
      -subj /CN=swarmgate-placeholder.invalid -keyout /app/tls/placeholder.key -out /app/tls/placeholder.crt \
      2>/dev/null \
 && chmod 600 /app/tls/placeholder.key

WORKDIR /app
COPY package.json package-lock.json ./
# A build secret `npm_ca` (a PEM bundle) is only needed where the npm registry is reached through a TLS-inspecting
# proxy; elsewhere it is absent and ignored.
RUN --mount=type=secret,id=npm_ca \
    NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
COPY --from=build /app/build/src ./src
COPY templates ./templates
# The Lua balancer: nginx loads it from here (lua_package_path), never from a bundle; the stream balancer likewise.
COPY lua ./lua
COPY njs ./njs
# `swarmgate status` etc. for operators using docker exec.
RUN printf '#!/bin/sh\nexec node /app/src/main.js "$@"\n' > /usr/local/bin/swarmgate && chmod 755 /usr/local/bin/swarmgate

# More libuv threads than the default 4: file I/O of the reconcile loop never queues behind slow lookups.
# A 2 MB young generation (V8's default is 16 MB): the controller's reconciles make large short-lived garbage, and
# the default lets the heap grow by ~150 MB at 2,000 services for a few ms of reconcile time
# (bench/controller-scale runs with the same flag).
ENV NODE_ENV=production UV_THREADPOOL_SIZE=16 NODE_OPTIONS=--max-semi-space-size=2
# 8443: the controller's HTTPS API; 8402: its ACME challenge listener (plain HTTP, tokens only).
EXPOSE 80 443 8443 8402
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/src/main.js"]
CMD ["edge"]
