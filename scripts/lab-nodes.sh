#!/usr/bin/env bash
# The multi-node lab: N Swarm nodes on this machine, each a container running its own dockerd (a nested Swarm),
# on a bridge network of their own. The e2e-multinode suite drives them with
# `docker exec nodeN docker ...` and sends HTTP to each node's bridge address.
#
#   scripts/lab-nodes.sh up [N] [--workers W]
#                                 idempotent: node image, network, N nodes (default 3, all managers, so one can be
#                                 lost with quorum kept), swarm, the lab's images loaded into every node. A second
#                                 run on a warm lab takes seconds; images whose ID changed on the host are reloaded,
#                                 a node container that stopped (a test killed it) is replaced and joined again.
#                                 --workers W (default 0): W more nodes after them that join as workers. A worker's
#                                 engine state is on a volume, not a tmpfs, so `docker stop` + `docker start` of its
#                                 container is a reboot (engine state, swarm membership, images and volumes kept); a
#                                 stopped worker is started again, not replaced. Nodes beyond N+W leave.
#   scripts/lab-nodes.sh down     removes the node containers, their network, the workers' state volumes and the node
#                                 image (everything this script made carries the label swarmgate.lab=1).
#                                 `down --keep-image` keeps the image.
#   scripts/lab-nodes.sh status   what is there.
#
# Needs the host lab first (`npm run lab -- up`): the images it loads into the nodes are the ones that built.
# Every wait is bounded and says what it was waiting for. No host name is written here: the Debian mirror for the
# node image is read from this machine's apt sources at run time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_DIR="$ROOT/.lab"
NODE_DIR="$LAB_DIR/nodes"
NODE_IMAGE="${SWARMGATE_LAB_NODE_IMAGE:-swarmgate-lab-node:dev}"
NETWORK="${SWARMGATE_LAB_NODE_NETWORK:-swarmgate-lab-nodes}"
PREFIX="${SWARMGATE_LAB_NODE_PREFIX:-node}"
LAB_LABEL=swarmgate.lab=1
ROLE_LABEL=swarmgate.lab.role=node
WORKER_LABEL=swarmgate.lab.swarm-role=worker
STATE_LABEL=swarmgate.lab.role=node-state
# What the multi-node e2e suite runs inside the nodes.
read -r -a IMAGES <<<"${SWARMGATE_LAB_NODE_IMAGES:-${SWARMGATE_IMAGE:-swarmgate:dev} ${SWARMGATE_BACKEND_IMAGE:-swarmgate-test-backend:dev}}"
mkdir -p "$NODE_DIR"

log() { printf '[lab-nodes %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Polls `cmd` every second for at most `seconds`; on timeout names what it waited for.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${seconds} s waiting for $what"
    sleep 1
  done
}

node_name() { echo "$PREFIX$1"; }
in_node() { local node=$1; shift; docker exec "$node" "$@"; }
node_docker_answers() { timeout 10 docker exec "$1" docker info >/dev/null 2>&1; }
swarm_state() { docker exec "$1" docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true; }
lab_nodes() { docker ps -a --filter label="$LAB_LABEL" --filter label="$ROLE_LABEL" --format '{{.Names}}' | sort -V; }

debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  echo "$uri"
}

# --- node image --------------------------------------------------------------------------------------------
# Rebuilt when its Dockerfile changed (the Dockerfile's sha256 is a label of the image).
ensure_node_image() {
  local dockerfile="$ROOT/test/e2e-multinode/node/Dockerfile" sum
  sum=$(sha256sum "$dockerfile" | cut -d' ' -f1)
  if [ "$(docker image inspect --format '{{index .Config.Labels "swarmgate.lab.sha256"}}' "$NODE_IMAGE" 2>/dev/null)" = "$sum" ]; then
    return
  fi
  docker image inspect node:24-trixie-slim >/dev/null 2>&1 ||
    die "node:24-trixie-slim is missing: run \`npm run lab -- up\` first (it builds a stand-in when it cannot be pulled)"
  log "building $NODE_IMAGE (Docker engine in a container)"
  timeout 900 docker build --label "$LAB_LABEL" --label "swarmgate.lab.sha256=$sum" \
    --build-arg "DEBIAN_MIRROR=$(debian_mirror)" -t "$NODE_IMAGE" "$(dirname "$dockerfile")" \
    >"$NODE_DIR/build-node.log" 2>&1 || { tail -30 "$NODE_DIR/build-node.log" >&2; die "building $NODE_IMAGE failed"; }
}

ensure_network() {
  docker network inspect "$NETWORK" >/dev/null 2>&1 && return
  log "creating network $NETWORK"
  docker network create --driver bridge --label "$LAB_LABEL" "$NETWORK" >/dev/null
}

# --- nodes -------------------------------------------------------------------------------------------------
# The engine runs under a loop, as systemd runs it on a real node: a test can restart dockerd (SIGTERM stops every
# container, then the engine comes back with its state, swarm membership and volumes, as after an upgrade or a
# reboot) without losing the node. `--init` reaps what an exited engine leaves behind. A SIGTERM to the loop (`docker
# stop` of the node, a shutdown) stops the engine the way systemd does at shutdown: dockerd gets SIGTERM and stops
# its containers before the loop exits.
ENGINE_SUPERVISOR='trap "kill -TERM \$engine 2>/dev/null; wait \$engine; exit 0" TERM INT; while :; do dockerd --host unix:///var/run/docker.sock & engine=$!; wait $engine; echo "dockerd exited ($?); starting it again" >&2; sleep 1; done'
# Exactly the flags LAB.md verified: --privileged fails here (CAP_SYS_RESOURCE is not in the bounding set), so all
# other capabilities. A manager's /var/lib/docker is an exec tmpfs (fast, and gone with the container: a killed
# manager is replaced). A worker's is a volume of its own (on this machine's disk: overlayfs stacks on ext4, not on
# an overlay), so its container can be stopped and started again like a machine rebooted.
start_node() {
  local node=$1 role=$2 state
  local -a storage=(--tmpfs /var/lib/docker:exec) labels=()
  if [ "$role" = worker ]; then
    storage=(-v "$(state_volume "$node"):/var/lib/docker")
    labels=(--label "$WORKER_LABEL")
  fi
  state=$(docker inspect --format '{{.State.Status}}' "$node" 2>/dev/null) || state=missing
  # A container of that name that the lab did not make is never replaced, started or removed.
  if [ "$state" != missing ] && [ "$(docker inspect --format '{{index .Config.Labels "swarmgate.lab"}}' "$node")" != 1 ]; then
    die "a container named $node exists and is not the lab's (no $LAB_LABEL label): rename it, or set SWARMGATE_LAB_NODE_PREFIX"
  fi
  local made_as=manager
  [ "$state" = missing ] || [ "$(docker inspect --format '{{index .Config.Labels "swarmgate.lab.swarm-role"}}' "$node")" != worker ] ||
    made_as=worker
  if [ "$state" != missing ] && [ "$made_as" != "$role" ]; then
    # A node made for the other role (an earlier `up` with another shape) leaves; a fresh one joins in this role.
    log "$node was made as a $made_as, wanted as a $role: replacing it"
    remove_node "$node"
    state=missing
  fi
  case "$state" in
    running) return ;;
    missing) ;;
    *)
      if [ "$role" = worker ]; then
        # A stopped worker kept its engine state on its volume: it boots again, as a rebooted machine does.
        log "$node is $state: starting it again (its engine state is kept)"
        docker start "$node" >/dev/null
        return
      fi
      # A stopped manager lost its tmpfs (engine state, swarm membership, images): replace it, it joins afresh.
      log "$node is $state: replacing it"
      remove_node "$node"
      ;;
  esac
  log "starting $node ($role)"
  if [ "$role" = worker ]; then
    docker volume create --label "$LAB_LABEL" --label "$STATE_LABEL" "$(state_volume "$node")" >/dev/null
  fi
  docker run -d --cap-add=ALL --cap-drop=SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run "${storage[@]}" \
    --label "$LAB_LABEL" --label "$ROLE_LABEL" "${labels[@]}" \
    --network "$NETWORK" --hostname "$node" --name "$node" --init "$NODE_IMAGE" \
    sh -c "$ENGINE_SUPERVISOR" >/dev/null
}

state_volume() { echo "$1-docker"; }

# A node container and, for a worker, its engine state (a node that joins again under this name starts afresh).
remove_node() {
  local node=$1 volume
  docker rm -f "$node" >/dev/null
  volume=$(state_volume "$node")
  if [ "$(docker volume inspect --format '{{index .Labels "swarmgate.lab.role"}}' "$volume" 2>/dev/null)" = node-state ]; then
    docker volume rm "$volume" >/dev/null
  fi
}

# Swarm node entries that no live node container answers for (a replaced node's old self, a node beyond the count):
# demoted and removed, so a replacement joins as a manager and quorum counts only live managers. Not by status:
# Swarm takes ~13 s to mark a killed node down.
forget_stale_nodes() {
  local leader=$1 count=$2 live="" id hostname i node
  for i in $(seq 1 "$count"); do
    node=$(node_name "$i")
    live+=" $(docker exec "$node" docker info --format '{{.Swarm.NodeID}}' 2>/dev/null || true)"
  done
  while read -r id hostname; do
    [ -n "$id" ] || continue
    case " $live " in *" $id "*) continue ;; esac
    log "removing stale swarm node $hostname ($id)"
    in_node "$leader" docker node demote "$id" >/dev/null 2>&1 || true
    in_node "$leader" docker node rm --force "$id" >/dev/null
  done < <(in_node "$leader" docker node ls --format '{{.ID}} {{.Hostname}}')
}

# The leader is the first node that manages a swarm; a swarm is made on node1 only when no node is in one (a
# replaced node1 joins the others' swarm instead of starting a second one). Nodes 1..managers join as managers,
# the rest as workers.
ensure_swarm() {
  local count=$1 managers=$2 leader="" token worker_token address node i
  for i in $(seq 1 "$managers"); do
    node=$(node_name "$i")
    if [ "$(docker exec "$node" docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null)" = "active true" ]; then
      leader=$node
      break
    fi
  done
  if [ -z "$leader" ]; then
    leader=$(node_name 1)
    log "swarm init on $leader"
    in_node "$leader" docker swarm init --advertise-addr eth0 >/dev/null
  fi
  forget_stale_nodes "$leader" "$count"
  token=$(in_node "$leader" docker swarm join-token -q manager)
  worker_token=$(in_node "$leader" docker swarm join-token -q worker)
  address=$(docker inspect --format "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$leader")
  for i in $(seq 1 "$count"); do
    node=$(node_name "$i")
    [ "$(swarm_state "$node")" = active ] && continue
    if [ "$i" -le "$managers" ]; then
      log "$node joins as a manager"
      timeout 120 docker exec "$node" docker swarm join --advertise-addr eth0 --token "$token" "$address:2377" >/dev/null ||
        die "$node could not join the swarm at $address:2377"
    else
      log "$node joins as a worker"
      timeout 120 docker exec "$node" docker swarm join --advertise-addr eth0 --token "$worker_token" "$address:2377" >/dev/null ||
        die "$node could not join the swarm at $address:2377"
    fi
  done
  wait_for 120 "all $count nodes to be Ready in the swarm" all_ready "$leader" "$count"
}

all_ready() {
  local rows
  rows=$(in_node "$1" docker node ls --format '{{.Status}} {{.Availability}}')
  [ "$(grep -c '^Ready Active$' <<<"$rows")" -eq "$2" ] && [ "$(wc -l <<<"$rows")" -eq "$2" ]
}

# --- images ------------------------------------------------------------------------------------------------
# One `docker save` of every image the nodes lack (layers shared between images are written once), loaded into
# those nodes in parallel. An image is "lacking" when its ID inside the node differs from the host's.
load_images() {
  local count=$1 node i image want have tar="$NODE_DIR/images.tar"
  local -a missing=() targets=()
  for image in "${IMAGES[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "image $image is missing on this machine: run \`npm run lab -- up\` first"
  done
  for i in $(seq 1 "$count"); do
    node=$(node_name "$i")
    for image in "${IMAGES[@]}"; do
      want=$(docker image inspect --format '{{.Id}}' "$image")
      have=$(in_node "$node" docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
      if [ "$want" != "$have" ]; then
        targets+=("$node")
        break
      fi
    done
  done
  [ "${#targets[@]}" -gt 0 ] || return 0
  for image in "${IMAGES[@]}"; do missing+=("$image"); done
  log "saving ${missing[*]}"
  timeout 300 docker save -o "$tar" "${missing[@]}" || die "docker save of ${missing[*]} failed or took over 300 s"
  log "loading them into ${targets[*]}"
  local -a pids=()
  for node in "${targets[@]}"; do
    timeout 300 docker exec -i "$node" docker load -q <"$tar" >"$NODE_DIR/load-$node.log" 2>&1 &
    pids+=($!)
  done
  local failed=0 n=0
  for pid in "${pids[@]}"; do
    wait "$pid" || { log "loading images into ${targets[$n]} failed or took over 300 s:"; cat "$NODE_DIR/load-${targets[$n]}.log" >&2; failed=1; }
    n=$((n + 1))
  done
  rm -f "$tar"
  [ "$failed" = 0 ] || die "loading images into the nodes failed"
}

# --- commands ----------------------------------------------------------------------------------------------
cmd_up() {
  local managers=3 workers=0 count start=$SECONDS i node driver
  if [ $# -gt 0 ] && [ "$1" != --workers ]; then managers=$1; shift; fi
  if [ $# -gt 0 ]; then
    [ "$1" = --workers ] && [ $# -eq 2 ] || die "usage: up [N] [--workers W]"
    workers=$2
  fi
  [[ "$managers" =~ ^[1-9][0-9]*$ ]] || die "up takes a node count (a positive number), not \"$managers\""
  [[ "$workers" =~ ^[0-9]+$ ]] || die "--workers takes a count (0 or more), not \"$workers\""
  count=$((managers + workers))
  timeout 10 docker info >/dev/null 2>&1 || die "no Docker engine answers: run \`npm run lab -- up\` first"
  ensure_node_image
  ensure_network
  # Nodes beyond the requested count (an earlier `up 5`) leave: fewer live managers than the swarm expects
  # would cost quorum.
  for node in $(lab_nodes); do
    i=${node#"$PREFIX"}
    if [[ "$i" =~ ^[0-9]+$ ]] && [ "$i" -gt "$count" ]; then
      log "removing $node (beyond $count nodes)"
      remove_node "$node"
    fi
  done
  for i in $(seq 1 "$count"); do
    if [ "$i" -le "$managers" ]; then start_node "$(node_name "$i")" manager; else start_node "$(node_name "$i")" worker; fi
  done
  for i in $(seq 1 "$count"); do
    node=$(node_name "$i")
    wait_for 60 "dockerd inside $node to answer" node_docker_answers "$node"
  done
  # A worker's engine state is on a volume under this machine's Docker root: overlayfs stacks on a disk filesystem
  # (ext4, xfs), not on an overlay, where the nested engine would fall back to a copying driver (or fail).
  for i in $(seq $((managers + 1)) "$count"); do
    node=$(node_name "$i")
    driver=$(docker exec "$node" docker info --format '{{.Driver}}')
    [ "$driver" = overlay2 ] ||
      die "$node's engine stores images with \"$driver\", not overlay2: its state volume is on a filesystem overlayfs cannot stack on (this machine's Docker root: $(docker info --format '{{.DockerRootDir}}'))"
  done
  ensure_swarm "$count" "$managers"
  load_images "$count"
  log "$count node(s) up, $managers manager(s) and $workers worker(s) ($((SECONDS - start)) s):"
  for i in $(seq 1 "$count"); do
    node=$(node_name "$i")
    log "  $node $(docker inspect --format "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$node")"
  done
}

cmd_down() {
  local start=$SECONDS ids
  timeout 10 docker info >/dev/null 2>&1 || { log "no Docker engine answers; nothing to remove"; return; }
  ids=$(docker ps -aq --filter label="$LAB_LABEL" --filter label="$ROLE_LABEL")
  if [ -n "$ids" ]; then
    log "removing node containers"
    # shellcheck disable=SC2086
    timeout 120 docker rm -f $ids >/dev/null || die "removing the node containers took over 120 s"
  fi
  ids=$(docker volume ls -q --filter label="$LAB_LABEL" --filter label="$STATE_LABEL")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker volume rm $ids >/dev/null
  if [ "$(docker network inspect --format '{{index .Labels "swarmgate.lab"}}' "$NETWORK" 2>/dev/null)" = 1 ]; then
    docker network rm "$NETWORK" >/dev/null
  fi
  if [ "${1:-}" != --keep-image ] &&
    [ "$(docker image inspect --format '{{index .Config.Labels "swarmgate.lab"}}' "$NODE_IMAGE" 2>/dev/null)" = 1 ]; then
    docker image rm "$NODE_IMAGE" >/dev/null
  fi
  rm -f "$NODE_DIR"/images.tar
  log "nodes are down ($((SECONDS - start)) s)"
}

cmd_status() {
  local node leader
  echo "node image: $(docker image inspect --format '{{.Id}}' "$NODE_IMAGE" 2>/dev/null || echo none)"
  echo "network: $(docker network inspect --format '{{(index .IPAM.Config 0).Subnet}}' "$NETWORK" 2>/dev/null || echo none)"
  echo "nodes:"
  for node in $(lab_nodes); do
    echo "  $node $(docker inspect --format "{{.State.Status}} {{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$node" 2>/dev/null) swarm=$(swarm_state "$node")"
    leader=${leader:-$node}
  done
  [ -n "${leader:-}" ] || return 0
  echo "swarm (from $leader):"
  in_node "$leader" docker node ls 2>/dev/null | sed 's/^/  /' || echo "  not answering"
  echo "services (from $leader):"
  in_node "$leader" docker service ls 2>/dev/null | sed 's/^/  /' || true
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  *) echo "usage: $0 up [N] [--workers W]|down [--keep-image]|status" >&2; exit 2 ;;
esac
