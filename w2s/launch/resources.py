"""Does a recipe fit on N nodes x G GPUs? Resource arithmetic done before anything is submitted.

The checks, each reported with its numbers:

* every role actor fits on one node (``cluster.<role>.num_gpus_per_actor <= G``, CPUs likewise when the
  CPUs per node are known), and each role's actors can all be placed at once;
* training memory per GPU for the strong model (and the Aligner when it is trained), from the parameter
  count (``model.<m>.params_b``, else the local ``config.json``) with the usual mixed-precision Adam
  accounting under ZeRO (Rajbhandari et al. 2020): bf16 weights 2 B, gradients 2 B, fp32 master
  weights + Adam moments 12 B per parameter, sharded over the trainer ranks by stage; DPO adds a frozen
  reference model, RLHF a reward model and, for PPO, actor + critic + reference + reward;
* generation memory: the strong model's bf16 weights per tensor-parallel group.

Estimates leave ``ACTIVATION_HEADROOM`` of each GPU for activations, buffers and the CUDA context.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2s.errors import ConfigIssue

ROLES = ("generator", "corrector", "trainer", "judge")
WEIGHT_BYTES = 2.0          # bf16/fp16 weights
GRAD_BYTES = 2.0            # bf16/fp16 gradients
OPTIM_BYTES = 12.0          # fp32 master weights + Adam m and v
ACTIVATION_HEADROOM = 0.2   # share of a GPU kept free for activations, buffers and the CUDA context


@dataclass
class Request:
    """What a Slurm job offers: nodes x GPUs per node, GPU memory, and (optionally) CPUs per node."""

    nodes: int
    gpus_per_node: int
    gpu_mem_gb: float = 80.0
    cpus_per_node: int = 0  # 0: unknown, not checked

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass
class Report:
    """The outcome: problems refuse the launch; notes show the arithmetic that passed or was skipped."""

    issues: list[ConfigIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        except (AttributeError, KeyError):
            return default
    return node


# ----------------------------------------------------------------------------------------------- model sizes
def params_from_config(config: dict[str, Any]) -> float:
    """Parameter count (in billions) of a decoder-only transformer from its Hugging Face ``config.json``."""
    cfg = config.get("text_config", config)
    h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
    inter = int(cfg.get("intermediate_size") or 4 * h)
    heads = int(cfg.get("num_attention_heads") or 1)
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2          # q, o + k, v
    mlp = 3 * h * inter                                               # gate, up, down
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return (layers * (attn + mlp * experts + 2 * h) + embed) / 1e9


def model_params_b(model_cfg: Any) -> tuple[float, str]:
    """Parameters in billions of ``model.<name>`` and where the number came from (0 when unknown)."""
    declared = float(_get(model_cfg, "params_b", 0.0) or 0.0)
    if declared > 0:
        return declared, "params_b"
    path = str(_get(model_cfg, "path", "") or "")
    if not path:
        return 0.0, "no path"
    if path.startswith("asset:"):
        from w2s.assets import asset_dir  # only looks: an asset is never built just to be measured

        try:
            local = asset_dir(path.split(":", 1)[1])
        except KeyError:
            return 0.0, f"unknown asset {path}"
    else:
        from w2s.shipped import resolve_path

        local = resolve_path(path)
    cfg_file = Path(local) / "config.json"
    if not cfg_file.is_file():
        return 0.0, f"{path} has no local config.json (set params_b)"
    try:
        return params_from_config(json.loads(cfg_file.read_text())), str(cfg_file)
    except (KeyError, ValueError, TypeError) as e:
        return 0.0, f"{cfg_file} unreadable ({e}; set params_b)"


# ----------------------------------------------------------------------------------------------- memory
def train_bytes_per_param(zero_stage: int, ranks: int, *, lora: bool = False, adam_offload: bool = False) -> float:
    """GPU bytes per parameter of one trained model on one of ``ranks`` data-parallel GPUs."""
    if lora:  # frozen base weights; adapter states are negligible next to them
        return WEIGHT_BYTES / (ranks if zero_stage >= 3 else 1)
    optim = 0.0 if adam_offload else OPTIM_BYTES
    n = max(ranks, 1)
    if zero_stage <= 0:
        return WEIGHT_BYTES + GRAD_BYTES + optim
    if zero_stage == 1:
        return WEIGHT_BYTES + GRAD_BYTES + optim / n
    if zero_stage == 2:
        return WEIGHT_BYTES + (GRAD_BYTES + optim) / n
    return (WEIGHT_BYTES + GRAD_BYTES + optim) / n


def frozen_bytes_per_param(zero_stage: int, ranks: int) -> float:
    """GPU bytes per parameter of a frozen model (reference, reward) next to the trained one."""
    return WEIGHT_BYTES / (max(ranks, 1) if zero_stage >= 3 else 1)


def frozen_offloaded(cfg: Any, method: str) -> bool:
    """Whether ``method``'s frozen models live in host memory, their layers visiting the GPU one at a time
    (``train.dpo.ref_offload``; PPO's ``train.rlhf.ppo.ref_reward_offload``)."""
    key = {"dpo": "train.dpo.ref_offload", "rlhf": "train.rlhf.ppo.ref_reward_offload"}.get(method)
    return bool(_get(cfg, key, False)) if key else False


def training_memory_gb(cfg: Any, params_b: float, ranks: int, method: str) -> tuple[float, str]:
    """Estimated GB per trainer GPU for ``method`` (sft, dpo, rlhf, aligner) and the formula behind it."""
    if method == "aligner":
        t = _get(cfg, "aligner.train")
    elif method == "rlhf":
        t = _get(cfg, "train.rlhf.reward_model")
    else:
        t = _get(cfg, f"train.{method}")
    zero = int(_get(t, "zero_stage", 2))
    lora = int(_get(t, "lora.rank", 0) or 0) > 0
    trained = train_bytes_per_param(zero, ranks, lora=lora, adam_offload=bool(_get(t, "adam_offload", False)))
    frozen = frozen_bytes_per_param(zero, ranks)
    terms = [(trained, "trained")]
    offloaded = method == "dpo" and frozen_offloaded(cfg, method)
    if method == "dpo" and not offloaded:
        terms.append((frozen, "reference"))
    if method == "rlhf" and bool(_get(cfg, "train.rlhf.ppo_enabled", True)):
        # PPO with colocate_all: actor and critic trained, reference and reward frozen, on the same GPUs (or in host
        # memory: train.rlhf.ppo.ref_reward_offload).
        terms = [(trained, "actor"), (trained, "critic")]
        offloaded = frozen_offloaded(cfg, method)
        if not offloaded:
            terms += [(frozen, "reference"), (frozen, "reward")]
    per_param = sum(b for b, _ in terms)
    gb = params_b * per_param
    formula = (f"{params_b:.1f}B params x ({' + '.join(f'{b:.2f} B {n}' for b, n in terms)}) "
               f"[ZeRO-{zero}, {ranks} rank(s){', LoRA' if lora else ''}"
               f"{', frozen models in host memory' if offloaded else ''}] = {gb:.1f} GB")
    return gb, formula


# ----------------------------------------------------------------------------------------------- checks
def check_resources(cfg: Any, req: Request) -> Report:
    """Every resource problem of ``cfg`` on ``req`` (see the module docstring), with the arithmetic."""
    rep = Report()
    usable = req.gpu_mem_gb * (1 - ACTIVATION_HEADROOM)
    for role in ROLES:
        n = int(_get(cfg, f"cluster.{role}.num_actors", 1))
        gpus = float(_get(cfg, f"cluster.{role}.num_gpus_per_actor", 0.0))
        cpus = float(_get(cfg, f"cluster.{role}.num_cpus_per_actor", 1.0))
        key = f"cluster.{role}.num_gpus_per_actor"
        if gpus > req.gpus_per_node:
            rep.issues.append(ConfigIssue(key, gpus, f"one {role} actor needs {gpus:g} GPUs but a node has "
                                          f"{req.gpus_per_node}", f"use --gpus-per-node >= {math.ceil(gpus)} or "
                                          f"fewer GPUs per actor"))
        elif gpus > 0:
            per_node = math.floor(req.gpus_per_node / gpus + 1e-9)
            fits = per_node * req.nodes
            if n > fits:
                rep.issues.append(ConfigIssue(f"cluster.{role}.num_actors", n,
                                  f"{n} {role} actors x {gpus:g} GPUs need {n * gpus:g} GPUs; {req.nodes} node(s) "
                                  f"x {req.gpus_per_node} GPUs hold at most {fits} such actors",
                                  f"use --nodes >= {math.ceil(n / per_node)} or fewer actors"))
        if req.cpus_per_node and cpus > req.cpus_per_node:
            rep.issues.append(ConfigIssue(f"cluster.{role}.num_cpus_per_actor", cpus,
                                          f"one {role} actor needs {cpus:g} CPUs but a node has {req.cpus_per_node}",
                                          "lower it or ask for bigger nodes"))
    _check_node_cpus(cfg, req, rep)
    _check_training(cfg, req, usable, rep)
    _check_generation(cfg, req, usable, rep)
    return rep


def _check_node_cpus(cfg: Any, req: Request, rep: Report) -> None:
    """The CPUs of all the actors one node holds (not only one actor's): a role's GPU actors fill a node's GPUs,
    and colocated roles seat one actor of each role on every GPU (:func:`w2s.placement.gpu_pool`)."""
    if not req.cpus_per_node or req.gpus_per_node <= 0:
        return
    from w2s.errors import ClusterError
    from w2s.placement import gpu_pool

    colocated = [str(r) for r in (_get(cfg, "cluster.colocate", []) or [])]
    try:
        pool = gpu_pool(cfg.cluster) if colocated else None
    except ClusterError:  # validation names the role
        pool = None
    if pool is not None:
        g = min(req.gpus_per_node, len(pool.bundles))
        need = g * pool.seat_cpus
        if need > req.cpus_per_node:
            rep.issues.append(ConfigIssue("cluster.colocate", colocated,
                              f"a node's {g} shared GPUs seat one actor of each colocated role "
                              f"({pool.describe_seat()} CPUs each): {need:g} CPUs, but a node has {req.cpus_per_node}",
                              "lower the colocated roles' num_cpus_per_actor (cluster.<role>.num_cpus_per_actor) or "
                              "ask for nodes with more CPUs"))
    for role in ROLES:
        gpus = float(_get(cfg, f"cluster.{role}.num_gpus_per_actor", 0.0))
        if role in colocated or gpus <= 0:
            continue
        n = int(_get(cfg, f"cluster.{role}.num_actors", 1))
        cpus = float(_get(cfg, f"cluster.{role}.num_cpus_per_actor", 1.0))
        on_node = min(n, math.floor(req.gpus_per_node / gpus + 1e-9))
        if on_node * cpus > req.cpus_per_node:
            rep.issues.append(ConfigIssue(f"cluster.{role}.num_cpus_per_actor", cpus,
                              f"{on_node} {role} actors fill a node's {req.gpus_per_node} GPUs and need {on_node} x "
                              f"{cpus:g} = {on_node * cpus:g} CPUs, but a node has {req.cpus_per_node}",
                              f"lower it to at most {math.floor(req.cpus_per_node / on_node * 100) / 100:g} or ask for "
                              "nodes with more CPUs"))


def _check_training(cfg: Any, req: Request, usable: float, rep: Report) -> None:
    ranks = int(_get(cfg, "cluster.trainer.num_actors", 1))
    gpus = float(_get(cfg, "cluster.trainer.num_gpus_per_actor", 0.0))
    jobs = []
    job = str(_get(cfg, "job", "loop"))
    # `job: aligner` always trains the Aligner; the loop does when aligner.train.enabled.
    if job == "aligner" or (job == "loop" and bool(_get(cfg, "aligner.train.enabled", False))):
        jobs.append(("aligner", "model.aligner"))
    if job == "loop":
        jobs.append((str(_get(cfg, "train.method", "dpo")), "model.strong"))
    dpo = _get(cfg, "train.dpo")
    if ("dpo", "model.strong") in jobs and "trainer" in (_get(cfg, "cluster.colocate", []) or []) and \
            int(_get(dpo, "zero_stage", 2)) == 3 and not frozen_offloaded(cfg, "dpo"):
        rep.notes.append("dpo: the trainer shares its GPUs (cluster.colocate), so its ZeRO-3 reference is dropped "
                         "whenever another role works and loaded again each round; train.dpo.ref_offload=true "
                         "keeps it in host memory instead")
    for method, model_key in jobs:
        params, source = model_params_b(_get(cfg, model_key))
        if params <= 0:
            rep.notes.append(f"{method} memory not checked: size of {model_key} unknown ({source})")
            continue
        if gpus <= 0:
            rep.notes.append(f"{method} trains on CPU (cluster.trainer.num_gpus_per_actor=0): GPU memory not checked")
            continue
        gb, formula = training_memory_gb(cfg, params, ranks, method)
        gb /= gpus  # an actor holding several GPUs spreads its share over them (model parallel)
        line = f"{method} on {model_key}: {formula} per rank -> {gb:.1f} GB per GPU; usable {usable:.1f} GB " \
               f"({req.gpu_mem_gb:g} GB x {1 - ACTIVATION_HEADROOM:.0%})"
        if gb > usable:
            need = _ranks_needed(cfg, params, method, usable * gpus)
            fix = f"use >= {need} trainer GPUs (cluster.trainer.num_actors, ZeRO-3)" if need else \
                "use ZeRO-3, LoRA or adam_offload"
            rep.issues.append(ConfigIssue("cluster.trainer.num_actors", ranks, f"does not fit: {line}", fix))
        else:
            rep.notes.append(f"fits: {line}")


def _ranks_needed(cfg: Any, params: float, method: str, usable_per_rank: float) -> int:
    """Fewest trainer ranks that fit under ZeRO-3 (0 when even 4096 do not)."""
    trained = WEIGHT_BYTES + GRAD_BYTES + OPTIM_BYTES
    offloaded = frozen_offloaded(cfg, method)
    if method == "rlhf":  # actor and critic, and the frozen two unless offloaded
        per_param = trained * (2 if offloaded else 3)
    else:
        per_param = trained + (WEIGHT_BYTES if method == "dpo" and not offloaded else 0)
    n = 1
    while n <= 4096:
        if params * per_param / n <= usable_per_rank:
            return n
        n *= 2
    return 0


def _check_generation(cfg: Any, req: Request, usable: float, rep: Report) -> None:
    gpus = float(_get(cfg, "cluster.generator.num_gpus_per_actor", 0.0))
    if gpus <= 0:
        return
    params, source = model_params_b(_get(cfg, "model.strong"))
    if params <= 0:
        rep.notes.append(f"generation memory not checked: size of model.strong unknown ({source})")
        return
    tp = max(int(_get(cfg, "generate.tensor_parallel_size", 1)), 1)
    per_gpu = params * WEIGHT_BYTES / max(tp, gpus)
    line = f"generation: {params:.1f}B x {WEIGHT_BYTES:g} B / {max(tp, gpus):g} GPU(s) = {per_gpu:.1f} GB of weights " \
           f"per GPU; usable {usable:.1f} GB"
    if per_gpu > usable:
        need = 2 ** math.ceil(math.log2(params * WEIGHT_BYTES / usable))  # TP sizes divide the heads: powers of 2
        rep.issues.append(ConfigIssue("generate.tensor_parallel_size", tp, f"does not fit: {line}",
                                      f"use tensor_parallel_size >= {need} and as many GPUs per generator actor"))
    else:
        rep.notes.append(f"fits: {line}")
