"""Training backends. :mod:`w2s.backends.openrlhf` is the only module of w2s that imports OpenRLHF;
:mod:`w2s.backends.ppo` builds and runs OpenRLHF's PPO command line (GPU only)."""
