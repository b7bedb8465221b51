"""w2s's PPO entry point: OpenRLHF's own PPO driver, with the reference actors given the KL anchor w2s chose.

PPO itself needs GPUs; what runs here is everything on this side of them: OpenRLHF's PPO modules imported against
the installed vLLM (the CPU build), its argument parser reached through the entry point, and the reference path
handed to OpenRLHF's real RayActorGroup method.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from w2s.backends.ppo_main import REFERENCE_FLAG, split_argv


def test_the_reference_flag_is_taken_out_of_openrlhfs_flags():
    assert split_argv(["--actor.model_name_or_path", "/p", REFERENCE_FLAG, "/init", "--seed", "1"]) == (
        "/init", ["--actor.model_name_or_path", "/p", "--seed", "1"])
    assert split_argv(["--seed", "1"]) == (None, ["--seed", "1"])
    with pytest.raises(SystemExit, match="needs a model path"):
        split_argv([REFERENCE_FLAG])


_PROBE = textwrap.dedent("""
    import importlib, json
    from w2s.compat import cpu
    cpu.apply()  # OpenRLHF's models import flash_attn at module level; the stub stands in on CPU
    modules = ["openrlhf.cli.train_ppo_ray", "openrlhf.trainer.ppo_trainer", "openrlhf.trainer.ray.launcher",
               "openrlhf.trainer.ray.ppo_actor", "openrlhf.trainer.ray.ppo_critic",
               "openrlhf.trainer.ray.vllm_engine", "openrlhf.trainer.ray.vllm_worker_wrap"]
    for name in modules:
        importlib.import_module(name)
    from openrlhf.trainer.ray.launcher import RayActorGroup, ReferenceModelActor
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
    from w2s.backends.ppo_main import anchor_reference

    class Handle:  # what the group's real method calls on each actor handle: init_model_from_pretrained.remote
        def __init__(self, seen):
            self.init_model_from_pretrained = type("M", (), {"remote": lambda _s, *a, **k: seen.append(a[1])})()

    anchor_reference("/initial-policy")
    seen = {}
    for kind in (ReferenceModelActor, PolicyModelActor):
        group = RayActorGroup.__new__(RayActorGroup)  # no actors started: PPO's actors need GPUs
        group.ray_actor_type = kind
        paths = seen.setdefault(kind.__name__ if hasattr(kind, "__name__") else str(kind), [])
        group._actor_handlers = [Handle(paths), Handle(paths)]
        group.async_init_model_from_pretrained("strategy", "/previous-policy")
    print(json.dumps({"modules": modules, "seen": seen}))
""")


@pytest.mark.slow  # imports OpenRLHF, DeepSpeed and vLLM in a subprocess
def test_openrlhfs_ppo_modules_import_and_only_the_reference_actors_get_the_anchor():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) == 7
    by_kind = {("Reference" if "Reference" in k else "Policy"): v for k, v in result["seen"].items()}
    assert by_kind == {"Reference": ["/initial-policy"] * 2, "Policy": ["/previous-policy"] * 2}


@pytest.mark.slow  # imports OpenRLHF's PPO driver in a subprocess
def test_the_entry_point_runs_openrlhfs_own_driver_with_its_own_parser():
    from w2s.compat.cpu import STUBS_DIR

    # OpenRLHF's driver imports its models, which import flash_attn (a GPU node has it): on CPU, w2s's stand-in.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STUBS_DIR), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "w2s.backends.ppo_main", REFERENCE_FLAG, "/initial", "--help"],
                         capture_output=True, text=True, timeout=600, env=env)
    # OpenRLHF's parser answered (its own flags listed), without w2s's flag, which the entry point took out.
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--actor.model_name_or_path" in out.stdout and "--vllm.enable_sleep" in out.stdout
    assert REFERENCE_FLAG not in out.stdout
