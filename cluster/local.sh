#!/usr/bin/env bash
# A multi-node Ray cluster on 127.0.0.1, on this one machine: one head plus N
# worker nodes, each its own `ray start` (own raylet, own temp dir). Use it to
# try hier-tl's multi-node code paths (trial placement, shared storage checks,
# node loss) without a cloud account.
#
#   cluster/local.sh up N     start a head and N workers, print the address
#   cluster/local.sh status   `ray status` for that cluster
#   cluster/local.sh down     stop that cluster (and only that cluster)
#
# Run `cluster/local.sh --help` for the settings.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: cluster/local.sh up N | down | status | --help

  up N     Start a Ray head and N worker nodes on 127.0.0.1 (N >= 0). Each worker
           is a separate `ray start --address=127.0.0.1:PORT --num-cpus=1
           --resources='{"node_K": 1}'` with its own temp dir, so trials can be
           pinned to node K with the custom resource "node_K". The head gets
           "node_0" and, by default, no CPUs, so every trial runs on a worker.
           The cluster address (127.0.0.1:PORT) is the only line printed on
           stdout, so ADDR=$(cluster/local.sh up 2) works; everything else goes to
           stderr. Then: hier-tl sweep SWEEP.yaml --address "$ADDR" ...
  status   Run `ray status` against the cluster.
  down     Stop the cluster's processes: every Ray process whose command line
           names this cluster's directory, and their children. Unlike a bare
           `ray stop`, it leaves any other Ray on this machine running.

Settings (environment variables):
  RAY                        ray executable (default: ray), e.g. .venv/bin/ray
  LOCAL_RAY_PORT             GCS port of the head (default: 6379)
  LOCAL_RAY_DIR              state, temp and log dir
                             (default: ${TMPDIR:-/tmp}/hier-tl-ray-PORT; keep it
                             short, Ray puts Unix sockets under it)
  LOCAL_RAY_HEAD_CPUS        CPUs the head advertises (default: 0)
  LOCAL_RAY_WORKER_CPUS      CPUs per worker (default: 1)
  LOCAL_RAY_WORKER_GPUS      GPUs per worker (default: 0; the nodes share this
                             machine, so do not give every worker all GPUs)
  LOCAL_RAY_OBJECT_STORE_MB  object store per node in MiB (default: 256)
  LOCAL_RAY_WAIT_S           seconds `up` waits for all nodes (default: 60)
  LOCAL_RAY_STOP_GRACE_S     seconds `down` waits after SIGTERM before
                             SIGKILL (default: 5)
  RAY_AUTH_MODE              "disabled" (default here) or "token". With "token"
                             and no RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH set, `up`
                             writes a fresh token to LOCAL_RAY_DIR/auth_token and
                             prints the two variables a client must export.

Every node binds to 127.0.0.1 only, serves no dashboard and sends no usage stats
(RAY_USAGE_STATS_ENABLED=0).
EOF
}

die() {
  echo "local.sh: $*" >&2
  exit 1
}
say() { echo "local.sh: $*" >&2; }

RAY_BIN=${RAY:-ray}
PORT=${LOCAL_RAY_PORT:-6379}
ROOT=${LOCAL_RAY_DIR:-${TMPDIR:-/tmp}/hier-tl-ray-$PORT}
ROOT=${ROOT%/}
HEAD_CPUS=${LOCAL_RAY_HEAD_CPUS:-0}
WORKER_CPUS=${LOCAL_RAY_WORKER_CPUS:-1}
WORKER_GPUS=${LOCAL_RAY_WORKER_GPUS:-0}
OBJECT_STORE_MB=${LOCAL_RAY_OBJECT_STORE_MB:-256}
WAIT_S=${LOCAL_RAY_WAIT_S:-60}
STOP_GRACE_S=${LOCAL_RAY_STOP_GRACE_S:-5}
ADDR="127.0.0.1:$PORT"
ENV_FILE="$ROOT/cluster.env"
# Marks a directory as made by this script: `up` only wipes, and `down` only
# stops processes under, a directory that carries it.
MARKER="$ROOT/.hier-tl-local-ray"

export RAY_USAGE_STATS_ENABLED=0
# An explicit --address must win over anything inherited from the caller.
unset RAY_ADDRESS

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# PIDs of this cluster's processes: Ray executables (gcs_server, raylet, Ray's
# python daemons) whose command line names $ROOT/, plus all their descendants
# (workers, agents and trial actors rename themselves to "ray::...", so they are
# found through their parent). The needles travel in the environment, not in
# awk's argv, so awk never matches itself.
cluster_pids() {
  ps -e -ww -o pid=,ppid=,args= | LOCAL_RAY_NEEDLE="$ROOT/" LOCAL_RAY_SELF="$$" awk '
    BEGIN {
      needle = ENVIRON["LOCAL_RAY_NEEDLE"]
      if (length(needle) < 3) exit 1
    }
    {
      pid = $1; ppid = $2
      $1 = ""; $2 = ""
      parent[pid] = ppid
      if (pid != ENVIRON["LOCAL_RAY_SELF"] && index($0, needle) > 0 &&
          ($0 ~ /(^|[ \/])(gcs_server|raylet) / || $0 ~ /\/ray\/[^ ]*\.py /))
        mark[pid] = 1
    }
    END {
      changed = 1
      while (changed) {
        changed = 0
        for (p in parent)
          if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1 }
      }
      for (p in mark) print p
    }'
}

load_env() {
  [[ -f $ENV_FILE ]] || return 1
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  export RAY_AUTH_MODE
  if [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then export RAY_AUTH_TOKEN_PATH; fi
}

alive_nodes() {
  "$RAY_BIN" status --address "$ADDR" 2>/dev/null |
    awk '/^Active:/ {a = 1; next} /^[A-Z][a-z]+:/ {a = 0} a && $2 ~ /^node_/ {n += $1} END {print n + 0}'
}

# Start time of a process (Linux /proc), so a PID that exits and is reused by
# an unrelated process while we wait is never signalled. Empty without /proc.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  local -a f
  read -ra f <<<"$stat"
  echo "${f[19]:-}"
}

stop_cluster() {
  local -a pids
  local -A started
  local p
  if [[ ! -f $MARKER ]]; then
    say "no local cluster in $ROOT"
    return 0
  fi
  mapfile -t pids < <(cluster_pids)
  if ((${#pids[@]} == 0)); then
    say "no Ray processes of $ROOT are running"
    return 0
  fi
  for p in "${pids[@]}"; do started[$p]=$(proc_start "$p"); done
  say "stopping ${#pids[@]} Ray processes of $ROOT"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_GRACE_S)) left
  while :; do
    left=()
    for p in "${pids[@]}"; do
      if kill -0 "$p" 2>/dev/null && [[ $(proc_start "$p") == "${started[$p]}" ]]; then left+=("$p"); fi
    done
    ((${#left[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      say "SIGKILL to ${#left[@]} processes still running after ${STOP_GRACE_S}s"
      kill -KILL "${left[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  rm -f "$ROOT/auth_token" "$ENV_FILE"
}

start_node() {
  # start_node LOGNAME ARGS... : one `ray start`, its output in $ROOT/LOGNAME.log
  local log="$ROOT/$1.log"
  shift
  if ! "$RAY_BIN" start "$@" >"$log" 2>&1; then
    say "ray start failed ($log):"
    tail -n 20 "$log" >&2 || true
    stop_cluster
    exit 1
  fi
}

cmd_up() {
  local n=${1:-}
  [[ -n $n ]] || die "up needs the number of worker nodes: local.sh up N"
  is_uint "$n" || die "N must be a whole number, got '$n'"
  for v in PORT HEAD_CPUS WORKER_CPUS WORKER_GPUS OBJECT_STORE_MB WAIT_S STOP_GRACE_S; do
    is_uint "${!v}" || die "$v must be a whole number, got '${!v}'"
  done
  command -v "$RAY_BIN" >/dev/null 2>&1 || die "no ray executable '$RAY_BIN' (set RAY=/path/to/ray)"
  if [[ -f $MARKER ]]; then
    if [[ -n $(cluster_pids) ]]; then
      die "a cluster is already running in $ROOT (cluster/local.sh down first)"
    fi
    rm -rf "$ROOT" # the previous run's logs
  elif [[ -e $ROOT ]] && [[ -n $(ls -A "$ROOT" 2>/dev/null) || ! -d $ROOT ]]; then
    die "LOCAL_RAY_DIR=$ROOT exists and was not made by local.sh; choose another"
  fi
  mkdir -p "$ROOT"
  chmod 700 "$ROOT"
  : >"$MARKER"

  export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
  case $RAY_AUTH_MODE in
    disabled) ;;
    token)
      if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} ]]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$ROOT/auth_token")
        export RAY_AUTH_TOKEN_PATH="$ROOT/auth_token"
      fi
      ;;
    *) die "RAY_AUTH_MODE must be 'disabled' or 'token', got '$RAY_AUTH_MODE'" ;;
  esac
  {
    echo "RAY_AUTH_MODE=$RAY_AUTH_MODE"
    if [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then printf 'RAY_AUTH_TOKEN_PATH=%q\n' "$RAY_AUTH_TOKEN_PATH"; fi
  } >"$ENV_FILE"

  local osm=$((OBJECT_STORE_MB * 1024 * 1024))
  mkdir -p "$ROOT/head"
  say "starting head on $ADDR (temp dir $ROOT/head)"
  start_node head --head --node-ip-address=127.0.0.1 --port="$PORT" \
    --include-dashboard=false --disable-usage-stats \
    --num-cpus="$HEAD_CPUS" --num-gpus=0 --resources='{"node_0": 1}' \
    --object-store-memory="$osm" --min-worker-port=0 --max-worker-port=0 \
    --temp-dir="$ROOT/head"

  local k
  for ((k = 1; k <= n; k++)); do
    mkdir -p "$ROOT/w$k"
    say "starting worker node $k (resource node_$k, temp dir $ROOT/w$k)"
    # Random ports (0) for everything per-node, so the nodes sharing
    # 127.0.0.1 never collide; one log monitor (the head's) is enough.
    start_node "w$k" --address="$ADDR" --node-ip-address=127.0.0.1 \
      --disable-usage-stats \
      --num-cpus="$WORKER_CPUS" --num-gpus="$WORKER_GPUS" \
      --resources="{\"node_$k\": 1}" \
      --object-store-memory="$osm" --min-worker-port=0 --max-worker-port=0 \
      --dashboard-agent-listen-port=0 --include-log-monitor=false \
      --temp-dir="$ROOT/w$k"
  done

  local want=$((n + 1)) have=0 deadline=$((SECONDS + WAIT_S))
  while :; do
    have=$(alive_nodes) || have=0
    ((have >= want)) && break
    if ((SECONDS >= deadline)); then
      say "only $have of $want nodes alive after ${WAIT_S}s; stopping"
      stop_cluster
      exit 1
    fi
    sleep 1
  done

  say "$want nodes alive (head + $n worker nodes); logs under $ROOT"
  if [[ $RAY_AUTH_MODE == token ]]; then
    say "token auth is on; a client needs:"
    say "  export RAY_AUTH_MODE=token"
    if [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then say "  export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; fi
  fi
  say "run a sweep on it:  hier-tl sweep SWEEP.yaml --address $ADDR --storage DIR"
  say "stop it:            cluster/local.sh down"
  echo "$ADDR"
}

cmd_status() {
  [[ -f $MARKER ]] && load_env || die "no local cluster in $ROOT (cluster/local.sh up N first)"
  if [[ -z $(cluster_pids) ]]; then
    die "no Ray processes of $ROOT are running"
  fi
  "$RAY_BIN" status --address "$ADDR"
}

cmd_down() {
  load_env || true
  stop_cluster
  # Ray processes that an embedded `hier-tl sweep` driver left when it was killed (recorded by pid)
  if command -v hier-tl >/dev/null 2>&1; then hier-tl cleanup || true; fi
}

if [[ ${1:-} =~ ^(up|status|down)$ && $ROOT != /?* ]]; then
  die "LOCAL_RAY_DIR must be an absolute path, got '$ROOT'"
fi

case ${1:-} in
  -h | --help | help)
    usage
    ;;
  up)
    (($# == 2)) || die "usage: local.sh up N"
    cmd_up "$2"
    ;;
  status)
    (($# == 1)) || die "usage: local.sh status"
    cmd_status
    ;;
  down)
    (($# == 1)) || die "usage: local.sh down"
    cmd_down
    ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    echo "local.sh: unknown command '$1'" >&2
    usage >&2
    exit 2
    ;;
esac
