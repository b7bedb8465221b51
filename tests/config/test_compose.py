"""Recipes compose, validate and fail loudly: every error at once, naming key, value and fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from w2s.cli import main
from w2s.config.compose import RECIPES_DIR, find_recipe, list_recipe_files, load_config, recipe_description
from w2s.errors import ConfigError

RECIPES = [str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in list_recipe_files()]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_validates_and_describes_itself(name):
    cfg = load_config(name)
    from w2s.config.schema import JOBS

    assert cfg.job in JOBS
    assert recipe_description(find_recipe(name)), f"{name}: the first line must be a '# description' comment"


def test_recipes_exist_for_each_method():
    assert {"quickstart", "tiny/sft", "tiny/dpo", "tiny/rlhf"} <= set(RECIPES)


def test_defaults_then_recipe_then_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(f"defaults: [{RECIPES_DIR / '_base' / 'tiny'}]\ntrain:\n  method: sft\n  dpo:\n    beta: 0.5\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# test\ndefaults: [base]\ntrain:\n  method: dpo\n")
    cfg = load_config(recipe, ["train.dpo.beta=0.2"])
    assert cfg.train.method == "dpo" and cfg.train.dpo.beta == 0.2
    cfg = load_config(recipe, [])
    assert cfg.train.dpo.beta == 0.5


def _issues(recipe, overrides, job=None):
    with pytest.raises(ConfigError) as e:
        load_config(recipe, overrides, job=job)
    return e.value.issues


def test_all_errors_at_once_with_key_value_and_fix():
    issues = _issues("tiny/dpo", ["train.dpo.bta=3", "generate.max_new_tokens=many", "generate.backend=vlm",
                                  "cluster.trainer.num_actors=3"])
    by_key = {i.key: i for i in issues}
    assert "train.dpo.beta" in by_key["train.dpo.bta"].fix                      # did-you-mean
    assert by_key["generate.max_new_tokens"].value == "many"                     # type error names the value
    assert "vllm" in by_key["generate.backend"].fix                              # closest choice
    assert "train.dpo.global_batch_samples" in by_key                            # cross-field, in the same report
    assert "2 x 3 = 6" in by_key["train.dpo.global_batch_samples"].problem       # the arithmetic is shown


def test_ppo_without_trainer_gpus_names_the_reason_and_the_fixes():
    """PPO places its actors on GPUs: Ray's logical ones on a machine without CUDA (recipes/tiny/rlhf.yaml)."""
    load_config("tiny/rlhf", [])  # valid as shipped
    (issue,) = _issues("tiny/rlhf", ["cluster.trainer.num_gpus_per_actor=0"])
    assert issue.key == "train.method" and "GPU" in issue.problem
    assert "cluster.num_gpus=1" in issue.fix and "train.rlhf.ppo_enabled=false" in issue.fix
    # A local instance's node size is known before anything starts (it was found only when PPO started).
    (issue,) = _issues("tiny/rlhf", ["cluster.num_gpus=2"])
    assert issue.key == "cluster.gpus_per_node" and issue.fix == "set cluster.gpus_per_node=2"


def test_impossible_local_resources_refused():
    # The tiny recipes tell Ray of 4 logical CPUs: 5 one-CPU trainer ranks cannot be placed.
    issues = _issues("tiny/sft", ["cluster.trainer.num_actors=5", "train.sft.global_batch_samples=10"])
    assert any(i.key == "cluster.trainer" and "5 CPUs" in i.problem for i in issues)


def test_missing_data_file_and_unknown_asset(tmp_path):
    issues = _issues("tiny/dpo", [f"loop.prompts.path={tmp_path}/nope.jsonl", "model.strong.path=asset:huge"])
    keys = {i.key for i in issues}
    assert {"loop.prompts.path", "model.strong.path"} <= keys


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  method: dpo\n   beta: [\n")
    (issue,) = _issues(recipe, [])
    assert "bad.yaml:" in str(issue.value)


def test_defaults_cycle_detected(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a]\n")
    assert any("cycle" in i.problem for i in _issues(tmp_path / "a.yaml", []))


def test_cli_validate_exit_codes(capsys):
    assert main(["validate", "tiny/dpo"]) == 0
    assert main(["validate", "tiny/dpo", "train.dpo.bta=3", "loop.rounds=0"]) == 2
    err = capsys.readouterr().err
    assert "train.dpo.bta" in err and "loop.rounds" in err and "2 config error(s)" in err


def test_cli_unknown_flag_hint(capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", "tiny/dpo", "--rounds", "3"])
    assert e.value.code == 2
    assert "key=value" in capsys.readouterr().err


def test_cli_print_config_recipes_and_explain(capsys):
    assert main(["print-config", "tiny/dpo", "train.dpo.beta=0.3"]) == 0
    assert "beta: 0.3" in capsys.readouterr().out
    assert main(["recipes"]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert main(["explain", "train.reference"]) == 0
    assert "initial" in capsys.readouterr().out
    assert main(["explain", "train.dpo.refrence"]) == 2
    capsys.readouterr()
    # Entries by name (eval.judges.NAME): any name, the entry's fields.
    assert main(["explain", "eval.judges"]) == 0
    assert "eval.judges.NAME (JudgeConfig by name; defined: ['similarity'])" in capsys.readouterr().out
    assert main(["explain", "eval.judges.harmless.preset"]) == 0
    assert "eval.judges.harmless.preset (str, default '')  one of" in capsys.readouterr().out
    assert main(["explain", "eval.judges.harmless.prset"]) == 2
    assert "did you mean eval.judges.harmless.preset?" in capsys.readouterr().err


def test_validate_checks_every_judge_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("tiny/sft", ["eval.judges.x.kind=pairwise", "eval.judges.x.user_prompt={prompt} {responseA}",
                                 "eval.judges.rm.kind=cost-model", "eval.judges.g.kind=pairwise",
                                 "eval.judges.g.preset=helpfulness", "eval.judges.g.endpoint.base_url=localhost:8000",
                                 "eval.judges.g.endpoint.model=m", "eval.judges.g.endpoint.api_key_env=W2S_UNSET_KEY",
                                 "eval.judges.similarity.enabled=false"])
    keys = {i.key for i in e.value.issues}
    assert {"eval.judges.x.user_prompt", "eval.judges.x.endpoint.base_url", "eval.judges.rm.model",
            "eval.judges.g.endpoint.base_url", "eval.judges.g.endpoint.api_key_env"} <= keys
    with pytest.raises(ConfigError, match="has no enabled judge"):
        load_config("tiny/sft", ["eval.judges.similarity.enabled=false"])
    with pytest.raises(ConfigError, match="did you mean eval.judges"):
        load_config("tiny/sft", ["eval.judge.kind=embedding"])  # the old single-judge key


def test_validate_stays_light():
    """`import w2s` and validation must not import torch, Ray or OpenRLHF."""
    code = ("import sys; from w2s.config.compose import load_config; load_config('tiny/dpo'); "
            "heavy = [m for m in ('torch', 'ray', 'openrlhf', 'transformers', 'deepspeed') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_key_given_twice_in_a_recipe_is_an_error(tmp_path):
    recipe = tmp_path / "dup.yaml"
    recipe.write_text(f"defaults: [{RECIPES_DIR / 'tiny' / 'dpo'}]\ntrain:\n  dpo:\n    beta: 0.2\n  dpo:\n"
                      "    beta: 0.3\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:5.*key 'dpo' appears twice \(lines 3 and 5\)"):
        load_config(str(recipe))


def test_exponent_floats_without_a_dot_are_numbers_in_recipes_and_overrides(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string, which validation would then refuse as "not a float".
    recipe = tmp_path / "lr.yaml"
    recipe.write_text(f"defaults: [{RECIPES_DIR / 'tiny' / 'dpo'}]\ntrain:\n  dpo:\n    optim:\n      lr: 5e-7\n")
    cfg = load_config(str(recipe), ["train.dpo.beta=1E-1", "run.dir=1e3runs"])
    assert cfg.train.dpo.optim.lr == 5e-7 and cfg.train.dpo.beta == 0.1 and cfg.run.dir == "1e3runs"
