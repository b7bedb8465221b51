#!/usr/bin/env bash
# GPU smoke check, one command on a CUDA machine (one GPU is enough):
#
#   scripts/gpu_smoke.sh [OUT_DIR]      (default runs/gpu-smoke)
#
# Sets up a GPU environment (W2S_VENV, default .venv-gpu: CUDA torch, flash-attn, vLLM), then on random tiny models
# it builds itself: vLLM generation against the transformers backend (tokens/s, start-up), then the `gpu`-marked
# tests: what only CUDA shows (the memory a sleeping engine gives back), two weak-to-strong DPO rounds with the
# roles colocated on the GPU (vLLM generation and correction, OpenRLHF DPO with flash-attention 2 and ZeRO-3, the
# second round taking new weights into engines that slept without them) and one RLHF round (reward model with
# ZeRO-2, then one PPO step through OpenRLHF's train_ppo_ray). It prints how long each test took and each run's
# status, and exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-smoke}
export W2S_VENV=${W2S_VENV:-.venv-gpu} W2S_EXTRAS=gpu HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { printf '\033[1m[gpu-smoke %s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-smoke: no CUDA GPU here (nvidia-smi lists none); on a CPU machine run 'make test' instead" >&2
  exit 2
fi
nvidia-smi -L
bash scripts/bootstrap.sh
W2S="$W2S_VENV/bin/w2s"
"$W2S_VENV/bin/python" - <<'PY'
import importlib.metadata as m, torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0)}")
for dist in ("vllm", "flash-attn", "deepspeed", "openrlhf", "ray", "transformers"):
    print(f"{dist} {m.version(dist)}")
PY
mkdir -p "$OUT"
step "generation: transformers vs vLLM on the tiny strong model"
"$W2S" bench generate --backend transformers,vllm --model asset:tiny-strong --prompts 64 --batch 64 \
  --max-new-tokens 64

# The rounds run once, inside the gpu-marked tests (tests/test_gpu_smoke.py), into $OUT/dpo and $OUT/rlhf.
step "gpu-marked tests: sleeping engines give their GPU memory back (levels 1 and 2), then gpu/smoke's rounds"
rm -rf "$OUT/dpo" "$OUT/rlhf"
W2S_GPU_SMOKE_OUT="$OUT" "$W2S_VENV/bin/python" -m pytest -q -p no:cacheprovider -m gpu --durations=0 tests
for name in dpo rlhf; do
  step "round(s): $name"
  "$W2S" status "$OUT/$name"
done
step "all GPU smoke checks passed; run directories under $OUT"
