# shellcheck shell=bash
# A Ray cluster across the nodes of a Slurm job, and a driver command run on it.
#
# Sourced by w2s.sbatch (rendered by `w2s launch slurm`); `w2s_main CMD...` does everything:
#   1. discovers the job's nodes (scontrol show hostnames) and their addresses (NodeAddr, or the address
#      of W2S_NET_IFACE on each node),
#   2. starts the Ray head on the first node and a worker on every other node, each as
#      `srun --overlap -N1 -n1 -w NODE ray start --block --node-ip-address=IP ...`,
#   3. polls the GCS until every node has joined (W2S_RAY_WAIT_S; the error names the missing nodes),
#   4. runs CMD on the head with RAY_ADDRESS / W2S_RAY_ADDRESS set, forwarding the Slurm warning signal
#      (USR2) to it and requeueing the job when it stopped early because of that signal,
#   5. tears down the Ray processes it started, by PID (never Ray's host-wide stop command, which kills every Ray on a host).
#
# Logs: $W2S_SLURM_DIR/driver-JOBID.log, ray-NODE-JOBID.log per node; the batch script's own output goes
# where #SBATCH --output says (job-JOBID.out next to them).
#
# Settings (environment variables; the sbatch file sets defaults, `sbatch --export=ALL,VAR=...` overrides):
#   W2S_VENV             virtual environment to activate (required)
#   W2S_SLURM_DIR        where logs go (required)
#   W2S_GPUS_PER_NODE    GPUs Ray may use per node (default 0)
#   W2S_NET_IFACE        network interface for Ray, NCCL and Gloo (e.g. ib0); empty: Slurm's NodeAddr
#   W2S_RAY_PORT         GCS port (default 20000 + job id % 10000, so jobs sharing a node do not clash)
#   W2S_RAY_MIN_WORKER_PORT / W2S_RAY_MAX_WORKER_PORT   port range of Ray workers (default: Ray's)
#   W2S_RAY_TMPDIR       Ray's temporary directory on every node (default $TMPDIR/w2s-ray-JOBID; keep it short:
#                        Unix socket paths are limited to 107 bytes)
#   W2S_RAY_DASHBOARD    1 starts the dashboard on 127.0.0.1 of the head (default 0)
#   W2S_RAY_WAIT_S       seconds to wait for all nodes to join (default 300)
#   W2S_MAX_REQUEUES     most requeues after a warning signal (default 20)

w2s_log() { printf '[w2s %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
w2s_die() { w2s_log "ERROR: $*"; exit 1; }

# Environment shared by the batch script, the Ray nodes (srun passes it on) and the driver.
w2s_setup_env() {
    [ -n "${W2S_VENV:-}" ] || w2s_die "W2S_VENV is not set"
    [ -f "$W2S_VENV/bin/activate" ] || w2s_die "no virtual environment at W2S_VENV=$W2S_VENV"
    # shellcheck disable=SC1091
    source "$W2S_VENV/bin/activate"   # plain activation: no login shell, no module system assumed
    mkdir -p "$W2S_SLURM_DIR"
    export RAY_AUTH_MODE=disabled            # a stray ~/.ray/auth_token would otherwise switch token auth on
    export RAY_USAGE_STATS_ENABLED=0
    export W2S_GPUS_PER_NODE="${W2S_GPUS_PER_NODE:-0}"
    export W2S_RAY_PORT="${W2S_RAY_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 10000))}"
    export W2S_RAY_TMPDIR="${W2S_RAY_TMPDIR:-${TMPDIR:-/tmp}/w2s-ray-${SLURM_JOB_ID:-$$}}"
    export RAY_TMPDIR="$W2S_RAY_TMPDIR"      # Ray nodes and the driver look for their sessions here
    if [ -n "${W2S_NET_IFACE:-}" ]; then
        export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$W2S_NET_IFACE}"
        export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$W2S_NET_IFACE}"
    fi
}

# The IPv4 address Ray should use on NODE.
w2s_node_ip() {
    local node=$1 addr
    if [ -n "${W2S_NET_IFACE:-}" ]; then
        addr=$(srun --overlap -N1 -n1 -w "$node" ip -4 -o addr show dev "$W2S_NET_IFACE" 2>/dev/null \
               | awk '{split($4, a, "/"); print a[1]; exit}')
        [ -n "$addr" ] || w2s_die "node $node has no IPv4 address on W2S_NET_IFACE=$W2S_NET_IFACE"
    else
        addr=$(scontrol show node "$node" | grep -oP 'NodeAddr=\K\S+')
        [ -n "$addr" ] || w2s_die "scontrol knows no NodeAddr for node $node"
        if ! [[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
            addr=$(getent ahostsv4 "$addr" | awk '{print $1; exit}')
            [ -n "$addr" ] || w2s_die "cannot resolve the address of node $node"
        fi
    fi
    printf '%s\n' "$addr"
}

# Fills W2S_NODES (names, head first) and W2S_NODE_IPS (same order).
w2s_discover_nodes() {
    mapfile -t W2S_NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    [ "${#W2S_NODES[@]}" -gt 0 ] || w2s_die "no nodes in SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST:-}"
    W2S_NODE_IPS=()
    local n
    for n in "${W2S_NODES[@]}"; do W2S_NODE_IPS+=("$(w2s_node_ip "$n")"); done
    export W2S_HEAD_IP="${W2S_NODE_IPS[0]}"
    export W2S_RAY_ADDRESS="$W2S_HEAD_IP:$W2S_RAY_PORT"
    export RAY_ADDRESS="$W2S_RAY_ADDRESS"
}

# Runs on a node (through srun): `ray start --block` in the foreground, as head or worker.
w2s_ray_node() {
    local role=$1 ip=$2
    local args=(--block --node-ip-address="$ip" --num-cpus="${SLURM_CPUS_ON_NODE:-1}"
                --num-gpus="${W2S_GPUS_PER_NODE:-0}" --disable-usage-stats)
    [ -n "${W2S_RAY_MIN_WORKER_PORT:-}" ] && args+=(--min-worker-port="$W2S_RAY_MIN_WORKER_PORT")
    [ -n "${W2S_RAY_MAX_WORKER_PORT:-}" ] && args+=(--max-worker-port="$W2S_RAY_MAX_WORKER_PORT")
    mkdir -p "$W2S_RAY_TMPDIR"
    # torch.distributed (Gloo) and NCCL otherwise pick the address the hostname resolves to, which is often
    # a loopback address (127.0.1.1 in Debian's /etc/hosts): use the interface that carries this node's Ray
    # address, on this node only, unless the user chose one.
    local iface
    iface=$(ip -4 -o addr show 2>/dev/null | awk -v ip="$ip" '{split($4, a, "/"); if (a[1] == ip) {print $2; exit}}')
    if [ -n "$iface" ]; then
        export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$iface}" NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$iface}"
    fi
    if [ "$role" = head ]; then
        args+=(--head --port="$W2S_RAY_PORT")
        if [ "${W2S_RAY_DASHBOARD:-0}" = 1 ]; then
            args+=(--include-dashboard=true --dashboard-host=127.0.0.1)
        else
            args+=(--include-dashboard=false)
        fi
    else
        args+=(--address="$W2S_RAY_ADDRESS")
    fi
    echo "$(hostname) ${SLURMD_NODENAME:-?} GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-} ray start ${args[*]}"
    exec ray start "${args[@]}"
}

# Starts one Ray node on NODE through srun, in the background; its srun PID goes to W2S_RAY_PIDS.
w2s_start_ray_node() {
    local role=$1 node=$2 ip=$3 gpus=()
    [ "${W2S_GPUS_PER_NODE:-0}" -gt 0 ] && gpus=(--gpus-per-node="$W2S_GPUS_PER_NODE")
    srun --overlap -N1 -n1 -w "$node" "${gpus[@]}" --kill-on-bad-exit=0 \
        bash -c "source '$W2S_CLUSTER_SH' && w2s_ray_node $role $ip" \
        >>"$W2S_SLURM_DIR/ray-$node-$SLURM_JOB_ID.log" 2>&1 &
    W2S_RAY_PIDS+=("$!")
}

w2s_start_ray() {
    W2S_RAY_PIDS=()
    local i t0=$SECONDS
    w2s_log "nodes: ${W2S_NODES[*]} at ${W2S_NODE_IPS[*]}; Ray head $W2S_RAY_ADDRESS, temp dir $W2S_RAY_TMPDIR"
    w2s_start_ray_node head "${W2S_NODES[0]}" "$W2S_HEAD_IP"
    for ((i = 1; i < ${#W2S_NODES[@]}; i++)); do
        w2s_start_ray_node worker "${W2S_NODES[$i]}" "${W2S_NODE_IPS[$i]}"
    done
    local expect=()
    for ((i = 0; i < ${#W2S_NODES[@]}; i++)); do expect+=("${W2S_NODES[$i]}=${W2S_NODE_IPS[$i]}"); done
    python -m w2s.launch.ray_wait --address "$W2S_RAY_ADDRESS" --timeout "${W2S_RAY_WAIT_S:-300}" \
        --log-hint "$W2S_SLURM_DIR/ray-NODE-$SLURM_JOB_ID.log" "${expect[@]}" \
        || { w2s_stop_ray; w2s_die "the Ray cluster did not come up"; }
    w2s_log "Ray cluster of ${#W2S_NODES[@]} nodes up in $((SECONDS - t0))s"
}

# Stops the Ray nodes this job started: SIGTERM to their srun (forwarded to `ray start --block`, which stops
# its node's processes), SIGKILL after a grace period (Slurm then reaps what is left of the step).
w2s_stop_ray() {
    local pid deadline=$((SECONDS + 30))
    [ "${#W2S_RAY_PIDS[@]}" -gt 0 ] || return 0
    for pid in "${W2S_RAY_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${W2S_RAY_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    W2S_RAY_PIDS=()
    srun --overlap -N"${#W2S_NODES[@]}" --ntasks-per-node=1 rm -rf "$W2S_RAY_TMPDIR" 2>/dev/null || true
    w2s_log "Ray stopped"
}

w2s_on_warning() {
    W2S_GOT_WARNING=1
    w2s_log "warning signal from Slurm: asking the driver (pid ${W2S_DRIVER_PID:-?}) to stop at a safe point"
    [ -n "${W2S_DRIVER_PID:-}" ] && kill -USR2 "$W2S_DRIVER_PID" 2>/dev/null
    return 0
}

w2s_on_term() {
    w2s_log "terminated: stopping the driver and Ray"
    [ -n "${W2S_DRIVER_PID:-}" ] && kill -TERM "$W2S_DRIVER_PID" 2>/dev/null
    return 0
}

# Runs CMD... in the background and waits for it (so the signal traps run while it works); sets W2S_DRIVER_RC.
w2s_run_driver() {
    local log="$W2S_SLURM_DIR/driver-$SLURM_JOB_ID.log"
    w2s_log "driver: $* (log: $log)"
    "$@" >>"$log" 2>&1 &
    W2S_DRIVER_PID=$!
    # `wait` returns early when a trapped signal arrives; keep waiting until the driver is really gone.
    while true; do
        wait "$W2S_DRIVER_PID" && W2S_DRIVER_RC=0 || W2S_DRIVER_RC=$?
        kill -0 "$W2S_DRIVER_PID" 2>/dev/null || break
    done
    W2S_DRIVER_PID=
    if [ "$W2S_DRIVER_RC" -ne 0 ] && [ "$W2S_GOT_WARNING" = 1 ]; then
        w2s_log "driver stopped (code $W2S_DRIVER_RC) after the warning signal"
    elif [ "$W2S_DRIVER_RC" -ne 0 ]; then
        w2s_log "driver exited with code $W2S_DRIVER_RC; last lines of $log:"
        tail -n 40 "$log" >&2 || true
    fi
}

# The whole job: Ray up, CMD on the head, Ray down, requeue after a warning signal.
w2s_main() {
    [ $# -gt 0 ] || w2s_die "usage: w2s_main COMMAND [ARGS...]"
    W2S_GOT_WARNING=0
    W2S_DRIVER_PID=
    W2S_RAY_PIDS=()
    trap w2s_on_warning USR2
    trap w2s_on_term TERM
    trap 'w2s_stop_ray' EXIT
    w2s_setup_env
    w2s_log "job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}"
    w2s_discover_nodes
    w2s_start_ray
    w2s_run_driver "$@"
    trap - EXIT
    w2s_stop_ray
    if [ "$W2S_GOT_WARNING" = 1 ] && [ "$W2S_DRIVER_RC" -ne 0 ]; then
        if [ "${SLURM_RESTART_COUNT:-0}" -lt "${W2S_MAX_REQUEUES:-20}" ]; then
            w2s_log "stopped early on Slurm's warning: requeueing job $SLURM_JOB_ID to resume the run"
            scontrol requeue "$SLURM_JOB_ID"
            exit 0
        fi
        w2s_log "not requeueing: already requeued ${SLURM_RESTART_COUNT} times (W2S_MAX_REQUEUES)"
    fi
    exit "$W2S_DRIVER_RC"
}
