#!/bin/sh
# offline.sh COMMAND [ARG...]: run COMMAND in a private network namespace with only loopback (127.0.0.1)
# when this machine allows it (root or user namespaces, plus iproute2); otherwise run it plainly.
if unshare --net true 2>/dev/null && command -v ip >/dev/null 2>&1; then
  echo "offline.sh: running in a loopback-only network namespace (unshare --net): $*" >&2
  exec unshare --net sh -c 'ip link set lo up || exit 125; exec "$@"' offline "$@"
fi
if unshare --net --map-root-user true 2>/dev/null && command -v ip >/dev/null 2>&1; then
  echo "offline.sh: running in a loopback-only user+network namespace: $*" >&2
  exec unshare --net --map-root-user sh -c 'ip link set lo up || exit 125; exec "$@"' offline "$@"
fi
echo "offline.sh: cannot create a network namespace here; running with the normal network: $*" >&2
exec "$@"
