"""The CPU weight sync of OpenRLHF's PPO, into a real vLLM engine: a trainer's rank 0 broadcasts every parameter
of another model over w2s's gloo group, one ``update_weight`` call each as OpenRLHF's ``broadcast_to_vllm`` makes
them, and the engine then computes with exactly those weights (its log-probabilities equal transformers' on the
new model; before the sync they do not), and its sync record's checksum is theirs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

_SYNC = textwrap.dedent("""
    import json, os, socket, sys, threading
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # as OpenRLHF's rollout actor sets it: torch.dtype args

    def main():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from vllm import LLM, SamplingParams
        from w2s.compat.ppo import W2S_EXTENSION, GlooWeightGroup, weights_checksum
        from w2s.generation.refit import hf_token_logprobs, probe_ids

        base, log = sys.argv[1], sys.argv[2]
        os.environ["W2S_WEIGHT_SYNC_LOG"] = log  # read by the engine's worker process, started below
        ids = probe_ids(AutoTokenizer.from_pretrained(base))
        llm = LLM(model=base, dtype="float32", enforce_eager=True, worker_extension_cls=W2S_EXTENSION, seed=0,
                  max_model_len=128)

        def engine_logprobs():
            out = llm.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=1, temperature=0.0,
                                                                         prompt_logprobs=0), use_tqdm=False)[0]
            return [float(step[t].logprob) for t, step in zip(ids[1:], out.prompt_logprobs[1:])]

        torch.manual_seed(1)  # the trained policy: the same architecture, other weights
        policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        expected = hf_token_logprobs(policy, ids)
        before = engine_logprobs()

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        params = list(policy.named_parameters())
        group = {}

        def trainer_rank0():  # what broadcast_to_vllm does on the trainer's side, per parameter
            group["g"] = GlooWeightGroup("127.0.0.1", port, 0, 2)
            for _, p in params:
                group["g"].broadcast(p.data, src=0, stream=None)

        sender = threading.Thread(target=trainer_rank0, daemon=True)  # a failing engine must not hang it
        sender.start()
        llm.collective_rpc("init_process_group", args=("127.0.0.1", port, 1, 2, "openrlhf", "gloo", False))
        for i, (name, p) in enumerate(params, 1):
            llm.collective_rpc("update_weight", args=(name, p.dtype, tuple(p.shape), i == len(params)))
        sender.join(timeout=60)
        after = engine_logprobs()
        print("RESULT " + json.dumps({"before": before, "after": after, "expected": expected,
                                      "checksum": weights_checksum(params), "tensors": len(params)}))

    if __name__ == "__main__":
        main()
""")


def _gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 10
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def test_every_parameter_reaches_the_engine_over_gloo(tiny_strong, tmp_path):
    script, log = tmp_path / "sync.py", tmp_path / "weight_sync.jsonl"
    script.write_text(_SYNC)  # vLLM spawns processes that re-import the main module: a file, not -c
    out = subprocess.run([sys.executable, str(script), tiny_strong, str(log)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    assert _gap(result["before"], result["expected"]) > 0.5  # the engine started with other weights
    assert _gap(result["after"], result["expected"]) < 1e-3  # ... and now computes with the policy's
    (record,) = [json.loads(r) for r in log.read_text().splitlines()]
    assert record["tensors"] == result["tensors"]
    assert record["checksum"] == pytest.approx(result["checksum"], rel=1e-9)
    assert record["seconds"] >= 0 and record["bytes"] > 0
