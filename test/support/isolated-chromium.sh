#!/bin/sh
# Debian's Chromium in a network namespace of its own, for the browser tests (test/support/browser.ts launches it
# through this script). Chromium aborts page loads with ERR_NETWORK_CHANGED whenever the machine's interfaces change,
# and on a machine where containers come and go they change all the time. In its own namespace the browser sees only
# its loopback, which never changes. The ports a test needs are forwarded to the machine's loopback by
# netns-forwarder.ts (inside) and the test process (outside), over unix sockets: the file system is shared.
#
# From the environment: SWARMGATE_BROWSER_NODE (node), SWARMGATE_BROWSER_FORWARDER (netns-forwarder.ts),
# SWARMGATE_BROWSER_READY (a file the forwarder creates once it listens), SWARMGATE_BROWSER_FORWARDS
# ("port=socket ..."), SWARMGATE_CHROMIUM_BINARY. The forwarder gets none of Playwright's pipes (fds 3 and 4), so
# Chromium's exit closes them, and it exits itself once Chromium has.
exec unshare --net -- sh -c '
  ip link set lo up || exit 1
  "$SWARMGATE_BROWSER_NODE" "$SWARMGATE_BROWSER_FORWARDER" "$SWARMGATE_BROWSER_READY" $SWARMGATE_BROWSER_FORWARDS \
    3>&- 4>&- </dev/null >/dev/null 2>"$SWARMGATE_BROWSER_READY.log" &
  tries=0
  while [ ! -e "$SWARMGATE_BROWSER_READY" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 200 ]; then
      echo "isolated-chromium: the port forwarder did not start:" >&2
      cat "$SWARMGATE_BROWSER_READY.log" >&2
      exit 1
    fi
    sleep 0.05
  done
  exec "$SWARMGATE_CHROMIUM_BINARY" "$@"
' isolated-chromium "$@"
