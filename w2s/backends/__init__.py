"""Training backends. :mod:`w2s.backends.openrlhf` runs OpenRLHF's SFT, DPO and reward-model trainers in-process;
it, its helpers :mod:`~w2s.backends.data` and :mod:`~w2s.backends.args`, the PPO driver
:mod:`~w2s.backends.ppo_main` and :mod:`w2s.compat` (which patches OpenRLHF) are the modules of w2s that import
OpenRLHF. :mod:`w2s.backends.models` knows what a model needs before it is loaded (no torch at import).
:mod:`w2s.backends.ppo` builds OpenRLHF's PPO command line, :mod:`w2s.backends.ppo_launch` runs it and
:mod:`w2s.backends.ppo_metrics` reads back what it measured."""
