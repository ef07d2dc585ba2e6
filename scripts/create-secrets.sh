#!/usr/bin/env bash
# Creates every swarmgate secret that is missing, on a Swarm manager. Never replaces or prints an existing one
# (rotate by removing the stack and the secret first, then run this again). Needs docker and openssl.
#
#   swarmgate_token         admin token: the API's admin routes and the CLI (controller only)
#   swarmgate_edge_token    edge token: can only poll for the config bundle (edges and controller)
#   swarmgate_state_key     seals the ACME account and certificates kept in Swarm configs (controller only)
#   swarmgate_channel_key   TLS key of the controller's API (controller only)
#   swarmgate_channel_cert  its self-signed certificate for swarmgate-controller, pinned by the edges
#
# Extra arguments are passed to every `docker secret create` (e.g. --label team=ops).
set -euo pipefail

exists() { docker secret inspect "$1" >/dev/null 2>&1; }
say() { printf '%s\n' "$*" >&2; }

command -v openssl >/dev/null 2>&1 || { say "openssl is needed"; exit 1; }
[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = true ] ||
  { say "run this on a Swarm manager (docker info says this node cannot manage the swarm)"; exit 1; }

for name in swarmgate_token swarmgate_edge_token swarmgate_state_key; do
  if exists "$name"; then
    say "$name exists; kept"
  else
    openssl rand -hex 32 | docker secret create "$@" "$name" - >/dev/null
    say "created $name"
  fi
done

key=swarmgate_channel_key cert=swarmgate_channel_cert
if exists "$key" && exists "$cert"; then
  say "$key and $cert exist; kept"
elif exists "$key" || exists "$cert"; then
  # One half cannot be made to match the other: the operator decides which to drop.
  say "only one of $key and $cert exists; remove it (docker secret rm) and run this again to make a new pair"
  exit 1
else
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj /CN=swarmgate-controller -addext subjectAltName=DNS:swarmgate-controller \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null)
  docker secret create "$@" "$key" "$dir/key.pem" >/dev/null
  docker secret create "$@" "$cert" "$dir/cert.pem" >/dev/null
  say "created $key and $cert (self-signed for swarmgate-controller, valid 10 years)"
fi
