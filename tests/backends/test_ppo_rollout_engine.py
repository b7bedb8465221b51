"""OpenRLHF's PPO rollout engines against the installed vLLM: ``create_vllm_engines`` on a Ray cluster with a
logical GPU, run by the CPU build of the same vLLM release the GPU wheel is.

What needs CUDA and stays unrun here (listed in the README): the NCCL/CUDA-IPC weight sync into the engines
(``WorkerWrap.update_weight*`` allocate on ``cuda``), vLLM's sleep mode (CUDA allocator only) and PPO's DeepSpeed
actors themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

_ROLLOUT = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    def main():
        from w2s.compat import cpu
        cpu.apply()
        import ray
        from transformers import AutoTokenizer
        from vllm import SamplingParams
        model = sys.argv[1]
        tok = AutoTokenizer.from_pretrained(model)
        ids = list(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_dict=True)["input_ids"])
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
        try:
            from openrlhf.trainer.ray.vllm_engine import batch_vllm_engine_call, create_vllm_engines

            # As OpenRLHF's PPO driver calls it for one engine of tensor parallel 1 (bf16, its own WorkerWrap).
            engines = create_vllm_engines(1, 1, model, 0, False, False, True, 128, gpu_memory_utilization=0.5)
            out = ray.get(engines[0].generate.remote(ids, SamplingParams(max_tokens=12, temperature=0.0)))
            reset = batch_vllm_engine_call(engines, "reset_prefix_cache")
            unfinished = ray.get(engines[0].get_num_unfinished_requests.remote())
            print("RESULT " + json.dumps({"text": tok.decode(out.outputs[0].token_ids, skip_special_tokens=True),
                              "finish": out.outputs[0].finish_reason, "reset": reset, "unfinished": unfinished}))
            for engine in engines:
                ray.kill(engine)
        finally:
            ray.shutdown()

    if __name__ == "__main__":
        main()
""")


def test_openrlhfs_rollout_engine_answers_greedily_like_transformers(smollm2, tmp_path):
    script = tmp_path / "rollout.py"  # vLLM spawns processes that re-import the main module: a file, not -c
    script.write_text(_ROLLOUT)
    out = subprocess.run([sys.executable, str(script), smollm2], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]  # Ray's actors print too
    result = json.loads(line[len("RESULT "):])
    # The answer transformers gives greedily in float32 (SmolLM2-135M-Instruct), reached through OpenRLHF's
    # engine actor, its worker extension loaded, and its engine-wide calls answered.
    assert result == {"text": "The capital of France is Paris.", "finish": "stop", "reset": [None],
                      "unfinished": 0}
