"""Compatibility layers that let the GPU-first training stack (OpenRLHF, DeepSpeed) run where it is not native."""
