"""The multi-node check that run.dir is shared, on a logical two-node Ray cluster (one machine, so shared)."""

from __future__ import annotations

import pytest

from w2s.errors import ClusterError
from w2s.shared_dir import check_shared_run_dir


@pytest.mark.slow  # two logical Ray nodes start
def test_every_node_reads_and_writes_the_run_dir_before_any_stage(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    second = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        nodes = [{"node_id": n["NodeID"], "hostname": n["NodeManagerHostname"]} for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2
        check_shared_run_dir(tmp_path, nodes)
        assert sorted(p.name for p in (tmp_path / ".nodes").iterdir()) == sorted(["driver", *(n["node_id"]
                                                                                             for n in nodes)])
        # A node that cannot answer (gone since it was listed) fails the check with the run dir named.
        cluster.remove_node(second)
        with pytest.raises(ClusterError, match=f"could not check that every node sees run.dir {tmp_path}"):
            check_shared_run_dir(tmp_path, nodes)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_one_node_needs_no_check(tmp_path):
    check_shared_run_dir(tmp_path, [{"node_id": "x", "hostname": "h"}])
    assert not (tmp_path / ".nodes").exists()
