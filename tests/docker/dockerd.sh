#!/usr/bin/env bash
# A private Docker engine for imgfeat's Docker tests, started and stopped by .ci/run (as root).
#
#   eval "$(bash tests/docker/dockerd.sh start)"    # prints: export DOCKER_HOST=unix://...
#   bash tests/docker/dockerd.sh stop
#
# Host networking only: --bridge=none and no iptables rules, so the engine has no bridge
# network (containers run with --network host or none; nothing gets a private-range address).
# Storage driver overlay2 when the kernel allows it, else vfs. The engine's data directory
# (images, BuildKit's build cache with pip's downloads) is the cache between runs on one
# machine; nothing assumes it is there: a missing image is built.
#   IMGFEAT_DOCKER_CACHE  data directory  (default /var/cache/imgfeat-test/docker)
#   IMGFEAT_DOCKER_RUN    socket, pid file, exec root and log  (default /run/imgfeat-test-docker)
set -euo pipefail
data="${IMGFEAT_DOCKER_CACHE:-/var/cache/imgfeat-test/docker}"
run="${IMGFEAT_DOCKER_RUN:-/run/imgfeat-test-docker}"
sock="$run/docker.sock"
pidfile="$run/dockerd.pid"
log="$run/dockerd.log"
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli="$(command -v docker)"

alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
answers() { "$docker_cli" -H "unix://$sock" version >/dev/null 2>&1; }

overlay_works() {
  local t; t="$(mktemp -d)"
  mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"; rm -rf "$t"; return 0
  fi
  rm -rf "$t"; return 1
}

start() {
  if [ "$(id -u)" -ne 0 ]; then echo "dockerd.sh: needs root" >&2; exit 1; fi
  command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd not installed (apt-get install docker.io)" >&2; exit 1; }
  if alive; then
    echo "dockerd.sh: an engine already runs with $pidfile (pid $(cat "$pidfile")): stop it first" >&2
    exit 1
  fi
  mkdir -p "$data" "$run"
  rm -f "$pidfile" "$sock"
  local driver=vfs
  if overlay_works; then driver=overlay2; fi
  dockerd --storage-driver="$driver" --iptables=false --ip6tables=false --bridge=none \
    --data-root "$data" --exec-root "$run/exec" -H "unix://$sock" --pidfile "$pidfile" \
    >"$log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 120); do
    if answers; then
      echo "dockerd.sh: engine up ($driver, data in $data)" >&2
      echo "export DOCKER_HOST=unix://$sock"
      return 0
    fi
    sleep 0.5
  done
  echo "dockerd.sh: the engine did not answer within 60 s; its log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}

stop() {
  if answers; then
    # The tests remove their containers; remove any left by a failed run, and keep the
    # build cache to a bounded size (most recently used kept: pip's downloads, layers).
    ids="$("$docker_cli" -H "unix://$sock" ps -aq)"
    [ -z "$ids" ] || "$docker_cli" -H "unix://$sock" rm -f -v $ids >/dev/null || true
    DOCKER_BUILDKIT=1 "$docker_cli" -H "unix://$sock" builder prune -f --keep-storage 6gb >/dev/null 2>&1 || true
  fi
  if alive; then
    local pid; pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    local i
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "dockerd.sh: dockerd $pid did not stop within 30 s" >&2; exit 1; fi
  fi
  rm -f "$pidfile" "$sock"
  echo "dockerd.sh: engine stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
