#!/usr/bin/env bash
# The swarmgate lab: a real single-node Docker Swarm with the swarmgate and test-backend images built.
#
#   scripts/lab.sh up      idempotent: engine, swarm, base images (offline stand-ins if they cannot be
#                          pulled), images, the lab's secrets. A second run on a warm machine takes seconds.
#   scripts/lab.sh clean   what the e2e suite runs before and after itself: removes the lab's stacks, the
#                          services and networks the tests made and the lab controller's sealed state.
#   scripts/lab.sh down    clean, and the lab's secrets and volumes. `down --all` also leaves the swarm and stops
#                          the daemon, if the lab started them and nothing but the lab ran there.
#   scripts/lab.sh status  what is there.
#
# The daemon may be the user's own, with a real swarmgate (stack `swarmgate`, network `swarmgate`, ports 80/443,
# secrets swarmgate_*) and the demo on it. The lab never touches those: it has its own names ($LAB below: the
# stack, its network, SWARMGATE_INSTANCE and the prefix of its secrets), publishes its edge on other ports, and
# removes only what carries its marks: the label $LAB_LABEL on a secret named ${LAB}_*, $TEST_LABEL (services and
# networks the tests create), swarmgate.instance=$LAB (the lab controller's state) or a stack name of its own.
#
# It never writes a registry or mirror host into the repository: the Debian mirror is read from this machine's
# apt sources at run time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_DIR="$ROOT/.lab"
CACHE_DIR="$LAB_DIR/cache"
IMAGE="${SWARMGATE_IMAGE:-swarmgate:dev}"
BACKEND_IMAGE="${SWARMGATE_BACKEND_IMAGE:-swarmgate-test-backend:dev}"
# The same names are in test/e2e/support/lab.ts and test/e2e/stack.e2e.yml.
LAB=sg-e2e
LAB_LABEL=swarmgate.lab=1
TEST_LABEL=sg-e2e=1
TOKEN_SECRET=${LAB}_token
STATE_KEY_SECRET=${LAB}_state_key
EDGE_TOKEN_SECRET=${LAB}_edge_token
CHANNEL_KEY_SECRET=${LAB}_channel_key
CHANNEL_CERT_SECRET=${LAB}_channel_cert
PEBBLE_CA_SECRET=${LAB}_pebble_ca
# The lab controller's ACME directory (stack.e2e.yml): its account record is named after it.
LAB_ACME_DIRECTORY=https://pebble:14000/dir
mkdir -p "$LAB_DIR" "$CACHE_DIR"

log() { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# --- engine ------------------------------------------------------------------------------------------------
ensure_engine() {
  if engine_answers; then return; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "no Docker daemon answers and installing one needs root"
    command -v apt-get >/dev/null 2>&1 || die "no Docker daemon answers; install Docker, then run this again"
    log "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
  fi
  [ "$(id -u)" = 0 ] || die "dockerd is installed but not running; start it (needs root)"
  log "starting dockerd (log: .lab/dockerd.log)"
  # setsid: the daemon must outlive this script and the shell that ran it.
  setsid dockerd >"$LAB_DIR/dockerd.log" 2>&1 </dev/null &
  echo $! >"$LAB_DIR/dockerd.pid"
  for _ in $(seq 1 60); do
    if engine_answers; then return; fi
    sleep 1
  done
  tail -20 "$LAB_DIR/dockerd.log" >&2 || true
  die "dockerd did not answer within 60 s"
}

ensure_swarm() {
  local state
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  if [ "$state" = active ]; then return; fi
  log "initialising a single-node swarm"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  touch "$LAB_DIR/created-swarm"
}

# --- base images -------------------------------------------------------------------------------------------
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$uri" ] || die "cannot read a Debian mirror from this machine's apt sources"
  echo "$uri"
}

node_binary() {
  local bin="$ROOT/node_modules/node/bin/node"
  [ -x "$bin" ] || (cd "$ROOT" && npm ci --no-audit --no-fund >/dev/null)
  [ -x "$bin" ] || die "node_modules/node/bin/node is missing after npm ci"
  echo "$bin"
}

npm_package_dir() {
  if [ -f /usr/lib/node_modules/npm/package.json ]; then echo /usr/lib/node_modules/npm; return; fi
  if [ ! -d "$CACHE_DIR/npm/package" ]; then
    mkdir -p "$CACHE_DIR/npm"
    (cd "$CACHE_DIR/npm" && npm pack npm@11 --silent >/dev/null && tar -xzf npm-*.tgz)
  fi
  echo "$CACHE_DIR/npm/package"
}

# A stand-in for node:24-trixie-slim: Debian trixie minbase plus the official Node 24 binary and npm.
build_node_standin() {
  local tag=$1 rootfs tarball="$CACHE_DIR/trixie-minbase.tar"
  command -v debootstrap >/dev/null 2>&1 || {
    [ "$(id -u)" = 0 ] || die "debootstrap is needed to build $tag offline"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d "$LAB_DIR/rootfs.XXXXXX")
    log "debootstrap trixie minbase (about a minute)"
    debootstrap --variant=minbase trixie "$rootfs" "$(debian_mirror)" >"$LAB_DIR/debootstrap.log" 2>&1 ||
      { tail -20 "$LAB_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  local staging
  staging=$(mktemp -d "$LAB_DIR/standin.XXXXXX")
  tar -C "$staging" -xf "$tarball"
  install -m 0755 "$(node_binary)" "$staging/usr/local/bin/node"
  mkdir -p "$staging/usr/local/lib/node_modules"
  cp -a "$(npm_package_dir)" "$staging/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$staging/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$staging/usr/local/bin/npx"
  log "importing stand-in $tag"
  tar -C "$staging" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV NODE_VERSION=24' -c 'CMD ["node"]' - "$tag" >/dev/null
  rm -rf "$staging"
}

ensure_base_images() {
  local tag
  for tag in $(cat "$ROOT/Dockerfile" "$ROOT/test/backend/Dockerfile" | awk 'toupper($1) == "FROM" {print $2}' | sort -u); do
    if docker image inspect "$tag" >/dev/null 2>&1; then continue; fi
    log "pulling $tag"
    if timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then continue; fi
    case "$tag" in
      node:24-trixie-slim) build_node_standin "$tag" ;;
      *) die "base image $tag cannot be pulled and the lab has no stand-in for it" ;;
    esac
  done
}

# --- images ------------------------------------------------------------------------------------------------
# `RUN --mount=type=secret` needs BuildKit: buildx where it is installed, else the 20.10+ client's own.
docker_build() {
  local secret=() builder=(docker build)
  if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    secret=(--secret id=npm_ca,src=/etc/ssl/certs/ca-certificates.crt)
  fi
  if ! docker buildx version >/dev/null 2>&1; then
    if [ -x /usr/bin/docker ] && /usr/bin/docker version --format '{{.Client.Version}}' >/dev/null 2>&1; then
      builder=(/usr/bin/docker build)
    fi
  fi
  DOCKER_BUILDKIT=1 "${builder[@]}" "${secret[@]}" --progress=plain "$@"
}

build_images() {
  log "building $IMAGE"
  docker_build -t "$IMAGE" "$ROOT" >"$LAB_DIR/build-swarmgate.log" 2>&1 ||
    { tail -30 "$LAB_DIR/build-swarmgate.log" >&2; die "building $IMAGE failed"; }
  log "building swarmgate-bench:dev"
  docker_build -t swarmgate-bench:dev "$ROOT/bench/proxies" >"$LAB_DIR/build-bench.log" 2>&1 ||
    { tail -30 "$LAB_DIR/build-bench.log" >&2; die "building swarmgate-bench:dev failed"; }
  log "building $BACKEND_IMAGE"
  docker_build -t "$BACKEND_IMAGE" "$ROOT/test/backend" >"$LAB_DIR/build-backend.log" 2>&1 ||
    { tail -30 "$LAB_DIR/build-backend.log" >&2; die "building $BACKEND_IMAGE failed"; }
}

# Pebble, Let's Encrypt's test CA, for the TLS e2e tests: Debian's binaries in an image, with a TLS certificate
# for its API signed by a CA the lab makes (handed to the controller as a secret).
build_pebble() {
  local dir="$LAB_DIR/pebble" context="$LAB_DIR/pebble-context"
  if ! command -v pebble >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || die "pebble is needed for the TLS e2e tests (apt-get install pebble)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble >/dev/null
  fi
  mkdir -p "$dir"
  if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=swarmgate-lab-ca \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    rm -f "$dir/cert.pem"
  fi
  # The same Pebble answers as "pebble" (the lab controller's directory) and "pebble-staging" (its staging
  # directory, for LETSENCRYPT_TEST): a certificate from before the second name is made again under the same CA.
  if [ ! -s "$dir/cert.pem" ] || ! openssl x509 -in "$dir/cert.pem" -noout -ext subjectAltName 2>/dev/null | grep -q pebble-staging; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=pebble \
      -keyout "$dir/key.pem" -out "$dir/cert.csr" 2>/dev/null
    printf 'subjectAltName=DNS:pebble,DNS:pebble-staging,DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
      -extfile "$dir/san.ext" -out "$dir/cert.pem" 2>/dev/null
  fi
  rm -rf "$context" && mkdir -p "$context"
  cp "$(command -v pebble)" "$(command -v pebble-challtestsrv)" "$ROOT/test/pebble/Dockerfile" \
    "$ROOT/test/pebble/pebble-config.json" "$dir/cert.pem" "$dir/key.pem" "$context/"
  log "building swarmgate-pebble:dev"
  docker_build -t swarmgate-pebble:dev "$context" >"$LAB_DIR/build-pebble.log" 2>&1 ||
    { tail -30 "$LAB_DIR/build-pebble.log" >&2; die "building the pebble image failed"; }
  ensure_file_secret "$PEBBLE_CA_SECRET" "$dir/ca.pem"
}

# A registry:2 stand-in from Debian's docker-registry, for the private-registry e2e test.
build_registry() {
  local context="$LAB_DIR/registry-context"
  if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || die "docker-registry and htpasswd are needed for the registry e2e test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry apache2-utils >/dev/null
  fi
  rm -rf "$context" && mkdir -p "$context"
  cp "$(command -v docker-registry)" "$ROOT/test/registry/Dockerfile" "$ROOT/test/registry/config.yml" "$context/"
  log "building swarmgate-registry:dev"
  docker_build -t swarmgate-registry:dev "$context" >"$LAB_DIR/build-registry.log" 2>&1 ||
    { tail -30 "$LAB_DIR/build-registry.log" >&2; die "building the registry image failed"; }
}

# A secret whose content the lab keeps in a file; recreated when the file changed (only the lab's stack uses it).
# The secret carries the file's sha256 as a label, so a lab of another clone on the same daemon is noticed too.
# A secret of that name without the lab's label is not the lab's: it is never replaced.
ensure_file_secret() {
  local name=$1 file=$2 sum labels
  sum=$(sha256sum "$file" | cut -d' ' -f1)
  if labels=$(docker secret inspect --format '{{index .Spec.Labels "swarmgate.lab"}} {{index .Spec.Labels "swarmgate.sha256"}}' "$name" 2>/dev/null); then
    case "$labels" in
      "1 $sum") return ;;
      "1 "*)
        # Another checkout's lab made it: its only user is the lab's own stack.
        remove_stack "$LAB"
        docker secret rm "$name" >/dev/null
        ;;
      *) die "secret $name exists without the label $LAB_LABEL: the lab did not make it and never replaces it" ;;
    esac
  fi
  docker secret create --label "$LAB_LABEL" --label "swarmgate.sha256=$sum" "$name" "$file" >/dev/null
  log "created secret $name"
}

ensure_state_key_secret() {
  local before after ids
  if [ ! -s "$LAB_DIR/state-key" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$LAB_DIR/state-key"
    chmod 600 "$LAB_DIR/state-key"
  fi
  before=$(docker secret inspect --format '{{.ID}}' "$STATE_KEY_SECRET" 2>/dev/null || true)
  ensure_file_secret "$STATE_KEY_SECRET" "$LAB_DIR/state-key"
  after=$(docker secret inspect --format '{{.ID}}' "$STATE_KEY_SECRET" 2>/dev/null || true)
  # A new key (another checkout's lab ran here, or its key file is gone): the lab's sealed state cannot be opened
  # with it, and a controller holds publishing while state sealed with another key exists (it protects a real
  # stack's certificates). The lab's state is only the lab's tests' certificates: it goes with the old key.
  if [ "$before" != "$after" ]; then
    ids=$(lab_state_configs)
    [ -z "$ids" ] || { docker config rm $ids >/dev/null 2>&1 || true; log "removed the lab's state sealed with its previous key"; }
  fi
}

random_file() {
  local file=$1
  if [ ! -s "$file" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file"
    chmod 600 "$file"
  fi
}

ensure_token_secret() {
  random_file "$LAB_DIR/token"
  random_file "$LAB_DIR/edge-token"
  # A token secret another checkout's lab made has another sha256 label: the lab's stack is removed and the secret
  # replaced.
  ensure_file_secret "$TOKEN_SECRET" "$LAB_DIR/token"
  ensure_file_secret "$EDGE_TOKEN_SECRET" "$LAB_DIR/edge-token"
}

# The edge⇄controller channel's key pair: a self-signed ECDSA P-256 certificate for swarmgate-controller, which
# the controller serves its API with and the edges pin (the same command scripts/create-secrets.sh runs).
ensure_channel_secrets() {
  local dir="$LAB_DIR/channel"
  mkdir -p "$dir" && chmod 700 "$dir"
  if [ ! -s "$dir/key.pem" ] || [ ! -s "$dir/cert.pem" ]; then
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=swarmgate-controller -addext subjectAltName=DNS:swarmgate-controller \
      -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null) || die "openssl could not make the channel key pair"
  fi
  ensure_file_secret "$CHANNEL_KEY_SECRET" "$dir/key.pem"
  ensure_file_secret "$CHANNEL_CERT_SECRET" "$dir/cert.pem"
}

remove_stack() {
  local stack=$1
  docker stack ls --format '{{.Name}}' | grep -qx "$stack" || return 0
  log "removing stack $stack"
  # Non-zero when its network still has users (tasks shutting down): the loop removes the network once free.
  docker stack rm "$stack" >/dev/null 2>&1 || true
  local networks
  for _ in $(seq 1 60); do
    networks=$(docker network ls -q --filter label=com.docker.stack.namespace="$stack")
    if [ -z "$(docker service ls -q --filter label=com.docker.stack.namespace="$stack")" ]; then
      [ -n "$networks" ] || return 0
      docker network rm $networks >/dev/null 2>&1 || true
    fi
    sleep 1
  done
  die "stack $stack did not go away within 60 s"
}

# --- what is the lab's ---------------------------------------------------------------------------------------
# Stacks by name: the lab's stack and the ones its tests deploy (sg-e2e-registry).
lab_stacks() { docker stack ls --format '{{.Name}}' 2>/dev/null | grep -E "^${LAB}(-.*)?\$" || true; }

lab_volumes() {
  docker volume ls --format '{{.Name}} {{.Label "com.docker.stack.namespace"}}' 2>/dev/null |
    awk -v lab="$LAB" '$2 == lab || index($2, lab "-") == 1 { print $1 }'
}

# Networks the tests made, and any a stack of the lab's left behind (a stack rm cut short).
lab_networks() {
  docker network ls --format '{{.ID}} {{.Label "com.docker.stack.namespace"}} {{.Label "sg-e2e"}}' 2>/dev/null |
    awk -v lab="$LAB" '$2 == lab || index($2, lab "-") == 1 || $NF == "1" { print $1 }'
}

# The lab controller's sealed state (certificates, its ACME account): configs of SWARMGATE_INSTANCE=$LAB. Records
# of controllers from before SWARMGATE_INSTANCE carry no instance label: of those, only names no real deployment
# has (hosts under .test, reserved by RFC 2606; the account at the lab's Pebble). Never every swarmgate.state.
lab_state_configs() {
  local account
  account="account.$(printf %s "$LAB_ACME_DIRECTORY" | sha256sum | cut -c1-12)"
  docker config ls --filter label=swarmgate.state \
    --format '{{.ID}} {{.Label "swarmgate.instance"}} {{.Label "swarmgate.state"}}' 2>/dev/null |
    awk -v lab="$LAB" -v account="$account" '
      NF == 3 && $2 == lab { print $1 }
      NF == 2 && ($2 == account || $2 ~ /^(cert|registry)\..*\.e2e\.test(:[0-9]+)?$/) { print $1 }'
}

# --- commands ----------------------------------------------------------------------------------------------
cmd_up() {
  local start=$SECONDS
  ensure_engine
  ensure_swarm
  ensure_base_images
  build_images
  build_pebble
  build_registry
  ensure_token_secret
  ensure_channel_secrets
  ensure_state_key_secret
  log "lab is up ($((SECONDS - start)) s)"
}

# Networks outlive their stack for a few seconds while tasks shut down: retried until gone or 30 s.
remove_networks() {
  local ids
  for _ in $(seq 1 30); do
    ids=$("$@" 2>/dev/null || true)
    [ -n "$ids" ] || return 0
    docker network rm $ids >/dev/null 2>&1 || sleep 1
  done
  log "warning: networks still in use: $ids"
}

cmd_clean() {
  engine_answers || { log "no daemon answers; nothing to remove"; return; }
  local stack ids
  # Test services first: one a failed test left on the lab's network keeps the network, and so its stack, alive.
  ids=$(docker service ls -q --filter label="$TEST_LABEL" 2>/dev/null || true)
  [ -z "$ids" ] || docker service rm $ids >/dev/null
  for stack in $(lab_stacks); do remove_stack "$stack"; done
  remove_networks lab_networks
  ids=$(lab_state_configs)
  [ -z "$ids" ] || docker config rm $ids >/dev/null 2>&1 || true
}

cmd_down() {
  engine_answers || { log "no daemon answers; nothing to remove"; return; }
  local ids others
  cmd_clean
  # Volumes of the lab's stacks (the edge's last bundle, the test registry's data): free once their containers are.
  for _ in $(seq 1 30); do
    ids=$(lab_volumes)
    [ -n "$ids" ] || break
    docker volume rm $ids >/dev/null 2>&1 || sleep 1
  done
  # The lab's label and a name of its own: a swarmgate_* secret an older lab labelled may be a real stack's now.
  ids=$(docker secret ls --filter label="$LAB_LABEL" --format '{{.ID}} {{.Name}}' 2>/dev/null |
    awk -v prefix="${LAB}_" 'index($2, prefix) == 1 { print $1 }')
  [ -z "$ids" ] || docker secret rm $ids >/dev/null 2>&1 || true
  rm -f "$LAB_DIR/token" "$LAB_DIR/edge-token"
  if [ "${1:-}" = --all ]; then
    others=$(docker service ls --format '{{.Name}}' 2>/dev/null | tr '\n' ' ')
    if [ -n "$others" ]; then
      log "services the lab did not make run here ($others): the swarm and the daemon stay"
    else
      if [ -f "$LAB_DIR/created-swarm" ]; then docker swarm leave --force >/dev/null && rm -f "$LAB_DIR/created-swarm"; fi
      if [ -f "$LAB_DIR/dockerd.pid" ]; then kill "$(cat "$LAB_DIR/dockerd.pid")" 2>/dev/null || true; rm -f "$LAB_DIR/dockerd.pid"; fi
    fi
  fi
  log "lab is down"
}

cmd_status() {
  if ! engine_answers; then echo "engine: not answering"; return 1; fi
  echo "engine: $(docker version --format '{{.Server.Version}}')"
  echo "swarm: $(docker info --format '{{.Swarm.LocalNodeState}}')"
  echo "images:"; docker image ls --format '  {{.Repository}}:{{.Tag}} {{.ID}} {{.CreatedSince}}' | grep -E 'swarmgate|node:24' || true
  echo "stacks:"; docker stack ls --format '  {{.Name}}'
  echo "services:"; docker service ls --format '  {{.Name}} {{.Replicas}} {{.Image}}'
}

case "${1:-}" in
  up) cmd_up; if [ "${2:-}" = --nodes ]; then bash "$ROOT/scripts/lab-nodes.sh" up "${3:-3}" "${@:4}"; fi ;;
  clean) cmd_clean ;;
  down) shift; bash "$ROOT/scripts/lab-nodes.sh" down; cmd_down "$@" ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|clean|down [--all]|status" >&2; exit 2 ;;
esac
