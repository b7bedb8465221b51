# shellcheck shell=bash
# A Ray cluster across the nodes of a Slurm job, and a driver command run on it.
#
# Sourced by w2s.sbatch (rendered by `w2s launch slurm`); `w2s_main CMD...` does everything:
#   1. discovers the job's nodes (scontrol show hostnames), the CPUs Slurm gave the job on each
#      (SLURM_CPUS_PER_TASK, else SLURM_JOB_CPUS_PER_NODE) and the address Ray will use on each: Slurm's
#      NodeAddr, or the IPv4 address of W2S_NET_IFACE on the node; a loopback address (a workstation whose
#      NodeAddr is 127.0.0.1) becomes the address Ray itself registers for that host, asked on the node,
#   2. chooses the job's Ray ports (w2s.launch.ray_net: one block of ports per job, free on every node of
#      the job) and records them in $W2S_SLURM_DIR/ray-ports-JOBID.env,
#   3. starts the Ray head on the first node and a worker on every other node, each as
#      `srun --overlap --nodes=1 --ntasks=1 --nodelist=NODE --cpus-per-task=C [--gpus-per-task=G]
#       ray start --block --node-ip-address=IP --num-cpus=C --num-gpus=G --<every port>=...`,
#   4. polls the GCS until a live Ray node reports each of the addresses chosen in 1 (W2S_RAY_WAIT_S; the
#      error names the missing nodes and the addresses Ray did register),
#   5. runs CMD on the head with RAY_ADDRESS / W2S_RAY_ADDRESS set, forwarding the Slurm warning signal
#      (USR2) to it and requeueing the job when it stopped early because of that signal,
#   6. tears down the Ray processes it started, by PID (never Ray's host-wide stop command, which kills
#      every Ray on a host).
#
# Logs: $W2S_SLURM_DIR/driver-JOBID.log, ray-NODE-JOBID.log per node, ray-ports-JOBID.env; the batch
# script's own output goes where #SBATCH --output says (job-JOBID.out next to them).
#
# Settings (environment variables; the sbatch file sets defaults, `sbatch --export=ALL,VAR=...` overrides):
#   W2S_VENV             virtual environment to activate (required)
#   W2S_SLURM_DIR        where logs go (required)
#   W2S_GPUS_PER_NODE    GPUs per node the job asked for (default 0); each Ray node gets them with
#                        --gpus-per-task and reports the GPUs Slurm gave its task
#   W2S_NET_IFACE        network interface for Ray, NCCL and Gloo (e.g. ib0); empty: Slurm's NodeAddr
#   W2S_RAY_PORT_RANGE   LO-HI window the job's port block comes from (default 20000-32767)
#   W2S_RAY_PORT_BLOCK   ports per job (default 512)
#   W2S_RAY_PORT         first port of the job's block, the GCS port (default: chosen, see ray_net.py)
#   W2S_RAY_MIN_WORKER_PORT / W2S_RAY_MAX_WORKER_PORT   worker ports instead of the block's
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
    export W2S_RAY_TMPDIR="${W2S_RAY_TMPDIR:-${TMPDIR:-/tmp}/w2s-ray-${SLURM_JOB_ID:-$$}}"
    export RAY_TMPDIR="$W2S_RAY_TMPDIR"      # Ray nodes and the driver look for their sessions here
    if [ -n "${W2S_NET_IFACE:-}" ]; then
        export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$W2S_NET_IFACE}"
        export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$W2S_NET_IFACE}"
    fi
}

# The IPv4 address Ray should use on NODE (the same one `ray start --node-ip-address` gets and the wait
# looks for).
w2s_node_ip() {
    local node=$1 addr
    if [ -n "${W2S_NET_IFACE:-}" ]; then
        addr=$(srun --overlap --nodes=1 --ntasks=1 --nodelist="$node" ip -4 -o addr show dev "$W2S_NET_IFACE" \
               2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
        [ -n "$addr" ] || w2s_die "node $node has no IPv4 address on W2S_NET_IFACE=$W2S_NET_IFACE"
    else
        addr=$(scontrol show node "$node" | grep -oP 'NodeAddr=\K\S+')
        [ -n "$addr" ] || w2s_die "scontrol knows no NodeAddr for node $node"
        if ! [[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
            addr=$(getent ahostsv4 "$addr" | awk '{print $1; exit}')
            [ -n "$addr" ] || w2s_die "cannot resolve the address of node $node"
        fi
    fi
    if [[ $addr == 127.* ]]; then
        # `ray start` replaces a loopback --node-ip-address by the host's outward-facing address; expect
        # that one (asked on the node, with Ray's own function), or the wait never sees the node.
        local ray_addr
        ray_addr=$(srun --overlap --nodes=1 --ntasks=1 --nodelist="$node" python -m w2s.launch.ray_net node-ip \
                   "$addr" 2>/dev/null | tail -n 1)
        [ -n "$ray_addr" ] || w2s_die "cannot ask node $node which address Ray uses for it"
        w2s_log "$node: address $addr is a loopback address; Ray registers this host as $ray_addr, using that"
        addr=$ray_addr
    fi
    printf '%s\n' "$addr"
}

# Fills W2S_NODE_CPUS (same order as W2S_NODES): the CPUs of the job on each node, which each Ray node's
# srun asks for again (srun does not inherit --cpus-per-task; without it a step may get one CPU).
w2s_node_cpus() {
    W2S_NODE_CPUS=()
    local n part count k parts=()
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then  # #SBATCH --cpus-per-task: one task per node
        for n in "${W2S_NODES[@]}"; do W2S_NODE_CPUS+=("$SLURM_CPUS_PER_TASK"); done
        return 0
    fi
    IFS=, read -ra parts <<<"${SLURM_JOB_CPUS_PER_NODE:-}"   # e.g. "32(x2),16", in node-list order
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
            n=${BASH_REMATCH[1]} count=${BASH_REMATCH[2]}
        else
            n=$part count=1
        fi
        for ((k = 0; k < count; k++)); do W2S_NODE_CPUS+=("$n"); done
    done
    [ "${#W2S_NODE_CPUS[@]}" -eq "${#W2S_NODES[@]}" ] \
        || w2s_die "cannot read CPUs per node from SLURM_JOB_CPUS_PER_NODE=${SLURM_JOB_CPUS_PER_NODE:-}"
}

# Fills W2S_NODES (names, head first), W2S_NODE_IPS and W2S_NODE_CPUS (same order).
w2s_discover_nodes() {
    mapfile -t W2S_NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    [ "${#W2S_NODES[@]}" -gt 0 ] || w2s_die "no nodes in SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST:-}"
    W2S_NODE_IPS=()
    local n
    for n in "${W2S_NODES[@]}"; do W2S_NODE_IPS+=("$(w2s_node_ip "$n")") || exit 1; done
    w2s_node_cpus
    export W2S_HEAD_IP="${W2S_NODE_IPS[0]}"
}

# Chooses every port of the job's Ray cluster (a block free on all of the job's nodes, see ray_net.py),
# records the choice in $W2S_SLURM_DIR/ray-ports-JOBID.env and loads it (W2S_RAY_PORT, ...,
# W2S_RAY_NODE_PORTS_<i> per node).
w2s_choose_ports() {
    local window=${W2S_RAY_PORT_RANGE:-20000-32767} block=${W2S_RAY_PORT_BLOCK:-512}
    local used plan_args=() expect=() i
    local file="$W2S_SLURM_DIR/ray-ports-${SLURM_JOB_ID}.env"
    [[ $window =~ ^[0-9]+-[0-9]+$ ]] || w2s_die "W2S_RAY_PORT_RANGE=$window is not LO-HI"
    local lo=${window%-*} hi=${window#*-}
    if [ -n "${W2S_RAY_PORT:-}" ]; then
        plan_args+=(--start "$W2S_RAY_PORT")
        lo=$((W2S_RAY_PORT < lo ? W2S_RAY_PORT : lo))
        hi=$((W2S_RAY_PORT + block - 1 > hi ? W2S_RAY_PORT + block - 1 : hi))
    fi
    if [ -n "${W2S_RAY_MIN_WORKER_PORT:-}" ] || [ -n "${W2S_RAY_MAX_WORKER_PORT:-}" ]; then
        [ -n "${W2S_RAY_MIN_WORKER_PORT:-}" ] && [ -n "${W2S_RAY_MAX_WORKER_PORT:-}" ] \
            || w2s_die "set both W2S_RAY_MIN_WORKER_PORT and W2S_RAY_MAX_WORKER_PORT, or neither"
        plan_args+=(--workers "$W2S_RAY_MIN_WORKER_PORT-$W2S_RAY_MAX_WORKER_PORT")
        lo=$((W2S_RAY_MIN_WORKER_PORT < lo ? W2S_RAY_MIN_WORKER_PORT : lo))
        hi=$((W2S_RAY_MAX_WORKER_PORT > hi ? W2S_RAY_MAX_WORKER_PORT : hi))
    fi
    # Ports in use on any node of the job (one step on all nodes; each task reads its own node's table).
    used=$(srun --overlap --nodes="${#W2S_NODES[@]}" --ntasks-per-node=1 \
           python -m w2s.launch.ray_net used-ports "$lo" "$hi" | tr '\n' ' ') \
        || w2s_die "could not list the ports in use on the job's nodes"
    for ((i = 0; i < ${#W2S_NODES[@]}; i++)); do expect+=("${W2S_NODES[$i]}=${W2S_NODE_IPS[$i]}"); done
    python -m w2s.launch.ray_net plan --job-id "${SLURM_JOB_ID:-0}" --window "$window" \
        --block "$block" --used "$used" "${plan_args[@]}" "${expect[@]}" >"$file" \
        || w2s_die "no free Ray ports for this job (see above)"
    # shellcheck disable=SC1090
    source "$file"
    export W2S_RAY_PORT W2S_RAY_CLIENT_SERVER_PORT W2S_RAY_DASHBOARD_PORT
    export W2S_RAY_ADDRESS="$W2S_HEAD_IP:$W2S_RAY_PORT"
    export RAY_ADDRESS="$W2S_RAY_ADDRESS"
    w2s_log "$(head -n 1 "$file" | sed 's/^# //'), GCS $W2S_RAY_ADDRESS (all ports in $file)"
}

# The number of GPUs Slurm gave this task (CUDA_VISIBLE_DEVICES is set by Slurm's GPU plugin).
w2s_task_gpus() {
    local devices=()
    if [ "${W2S_GPUS_PER_NODE:-0}" -eq 0 ]; then
        echo 0
    elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        IFS=, read -ra devices <<<"$CUDA_VISIBLE_DEVICES"
        echo "${#devices[@]}"
    else
        echo "${SLURM_GPUS_ON_NODE:-$W2S_GPUS_PER_NODE}"
    fi
}

# Runs on a node (through srun): `ray start --block` in the foreground, as head or worker.
# Args: ROLE IP NODE_MANAGER OBJECT_MANAGER AGENT_HTTP AGENT_GRPC RUNTIME_ENV METRICS MIN_WORKER MAX_WORKER
w2s_ray_node() {
    local role=$1 ip=$2
    local cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}} gpus
    gpus=$(w2s_task_gpus)
    local args=(--block --node-ip-address="$ip" --num-cpus="$cpus" --num-gpus="$gpus" --disable-usage-stats
                --node-manager-port="$3" --object-manager-port="$4" --dashboard-agent-listen-port="$5"
                --dashboard-agent-grpc-port="$6" --runtime-env-agent-port="$7" --metrics-export-port="$8"
                --min-worker-port="$9" --max-worker-port="${10}")
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
        # The dashboard (and, when it is off, Ray's headless dashboard process) only ever on loopback.
        args+=(--head --port="$W2S_RAY_PORT" --ray-client-server-port="$W2S_RAY_CLIENT_SERVER_PORT"
               --dashboard-host=127.0.0.1 --dashboard-port="$W2S_RAY_DASHBOARD_PORT")
        if [ "${W2S_RAY_DASHBOARD:-0}" = 1 ]; then
            args+=(--include-dashboard=true)
        else
            args+=(--include-dashboard=false)
        fi
    else
        args+=(--address="$W2S_RAY_ADDRESS")
    fi
    local allowed
    allowed=$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status 2>/dev/null)
    echo "$(hostname) ${SLURMD_NODENAME:-?}: ${cpus} CPU(s) (allowed: ${allowed:-?}), ${gpus} GPU(s)" \
         "(CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}), GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-}"
    echo "ray start ${args[*]}"
    exec ray start "${args[@]}"
}

# Starts the I-th node's Ray (ROLE head or worker) through srun, in the background, with the CPUs (and
# GPUs) of the job on that node; its srun PID goes to W2S_RAY_PIDS.
w2s_start_ray_node() {
    local role=$1 i=$2
    local node=${W2S_NODES[$i]} ip=${W2S_NODE_IPS[$i]} ports_var="W2S_RAY_NODE_PORTS_$2"
    local cmd=(srun --overlap --nodes=1 --ntasks=1 --nodelist="$node" --cpus-per-task="${W2S_NODE_CPUS[$i]}")
    [ "${W2S_GPUS_PER_NODE:-0}" -gt 0 ] && cmd+=(--gpus-per-task="$W2S_GPUS_PER_NODE")
    cmd+=(--kill-on-bad-exit=0 bash -c "source '$W2S_CLUSTER_SH' && w2s_ray_node $role $ip ${!ports_var}")
    w2s_log "$node: ${cmd[*]}"
    "${cmd[@]}" >>"$W2S_SLURM_DIR/ray-$node-$SLURM_JOB_ID.log" 2>&1 &
    W2S_RAY_PIDS+=("$!")
}

w2s_start_ray() {
    W2S_RAY_PIDS=()
    local i t0=$SECONDS
    w2s_log "nodes: ${W2S_NODES[*]} at ${W2S_NODE_IPS[*]} with ${W2S_NODE_CPUS[*]} CPU(s); Ray head" \
            "$W2S_RAY_ADDRESS, temp dir $W2S_RAY_TMPDIR"
    w2s_start_ray_node head 0
    for ((i = 1; i < ${#W2S_NODES[@]}; i++)); do
        w2s_start_ray_node worker "$i"
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
    w2s_choose_ports
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
