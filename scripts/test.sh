#!/usr/bin/env bash
# Runs the whole test suite (the `slurm` tests need root; they start a local two-node Slurm cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
       RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# The HTML report is checked in a real headless browser: Debian's Chromium.
if [ ! -x /usr/bin/chromium ]; then
    printf '\033[1m[test %s] installing chromium (apt) for the report browser test\033[0m\n' "$(date +%H:%M:%S)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        >/dev/null || { echo "could not install chromium (apt-get install chromium, as root)" >&2; exit 1; }
fi
printf '\033[1m[test %s] w2s validate on every recipe\033[0m\n' "$(date +%H:%M:%S)"
for recipe in $(.venv/bin/w2s recipes | awk '{print $1}'); do .venv/bin/w2s validate "$recipe" >/dev/null; done
printf '\033[1m[test %s] pytest\033[0m\n' "$(date +%H:%M:%S)"
exec .venv/bin/python -m pytest -v --durations=15 "$@"
