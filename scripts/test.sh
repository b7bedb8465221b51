#!/usr/bin/env bash
# Runs the test suite: the whole of it (`make test`, what CI runs), or the fast tier (`make check`: every test not
# marked `slow` or `slurm`; no root, no installs, a test over 5 s that is not marked fails).
#
#   scripts/test.sh [check|all] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
       RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
tier=${1:-all}
[ $# -gt 0 ] && shift
step() { printf '\033[1m[test %s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }

if [ "$tier" = check ]; then
    step "pytest, fast tier (not slow, not slurm), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    # Wall-clock guard: the tier is meant to take under 8 minutes; a hang ends here, not at CI's limit.
    W2S_FAST_TEST_LIMIT_S=5 exec timeout --signal=INT --kill-after=30 900 \
        .venv/bin/python -m pytest -q -m "not slow and not slurm" --timeout=120 --durations=10 "$@"
fi

# The HTML report is checked in a real headless browser: Debian's Chromium.
if [ ! -x /usr/bin/chromium ]; then
    step "installing chromium (apt) for the report browser test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        >/dev/null || { echo "could not install chromium (apt-get install chromium, as root)" >&2; exit 1; }
fi
# Two tests at a time (W2S_TEST_WORKERS): a heavy test alone keeps about one core busy (process start-up and
# imports run on one), so two fill the two cores. vLLM tests (marker `vllm`) run one at a time in one worker, and
# so do the Slurm tests (see tests/conftest.py): this bounds the suite's memory and keeps one Slurm cluster.
workers=${W2S_TEST_WORKERS:-2}
# The whole suite runs the real Slurm tests: a cluster that cannot start fails them instead of skipping them.
export W2S_REQUIRE_SLURM=${W2S_REQUIRE_SLURM:-1}
# The revision tested, for scripts/suite_timings.py (a checkout without git says so).
step "pytest, the whole suite ($workers workers), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$workers" -gt 1 ]; then
    exec .venv/bin/python -m pytest -v --durations=15 -n "$workers" --dist loadgroup "$@"
fi
exec .venv/bin/python -m pytest -v --durations=15 "$@"
