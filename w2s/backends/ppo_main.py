"""OpenRLHF's PPO driver with the KL anchor w2s chose: ``python -m w2s.backends.ppo_main [--w2s.reference PATH]
<OpenRLHF's train_ppo_ray flags>``.

OpenRLHF 0.11.2 starts PPO's reference model (the KL anchor) from the policy PPO trains
(``--actor.model_name_or_path``) and has no flag for another. ``train.reference: initial`` anchors every round on
the initial policy, as DPO's reference does, so this entry point runs OpenRLHF's own driver
(``openrlhf.cli.train_ppo_ray``, unchanged) with its reference group given ``PATH`` instead. The change is made
in this driver process, where OpenRLHF's ``RayActorGroup`` hands each reference actor the path it loads.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from typing import Any

REFERENCE_FLAG = "--w2s.reference"
OPENRLHF_PPO = "openrlhf.cli.train_ppo_ray"


def split_argv(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the reference path, OpenRLHF's own flags) from this module's argv."""
    rest, reference = list(argv), None
    if REFERENCE_FLAG in rest:
        i = rest.index(REFERENCE_FLAG)
        if i + 1 >= len(rest):
            raise SystemExit(f"{REFERENCE_FLAG} needs a model path")
        reference = rest[i + 1]
        del rest[i:i + 2]
    return reference, rest


def anchor_reference(path: str) -> None:
    """Make OpenRLHF's reference actors load ``path`` (the other groups keep the paths OpenRLHF gives them)."""
    from openrlhf.trainer.ray.launcher import RayActorGroup, ReferenceModelActor

    real = RayActorGroup.async_init_model_from_pretrained

    def init_model_from_pretrained(self: Any, strategy: Any, pretrain: str, *args: Any, **kwargs: Any) -> Any:
        if self.ray_actor_type is ReferenceModelActor:
            pretrain = path
        return real(self, strategy, pretrain, *args, **kwargs)

    RayActorGroup.async_init_model_from_pretrained = init_model_from_pretrained


def main(argv: Sequence[str] | None = None) -> None:
    reference, rest = split_argv(sys.argv[1:] if argv is None else argv)
    if reference:
        anchor_reference(reference)
    sys.argv = [OPENRLHF_PPO, *rest]
    runpy.run_module(OPENRLHF_PPO, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
