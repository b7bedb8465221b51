"""Launching w2s on cluster schedulers: ``w2s launch slurm`` (:mod:`w2s.launch.slurm`), the resource checks
it runs first (:mod:`w2s.launch.resources`) and the node-join wait its job script uses
(:mod:`w2s.launch.ray_wait`). The job scripts themselves live in ``launch/slurm/``."""
