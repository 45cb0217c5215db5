"""One local Ray cluster per test session (2 CPUs, no dashboard, usage stats off)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# As the gzipscale command does (cli.py): one BLAS thread, set before numpy
# loads; threaded BLAS only slows the small fits down.
# (Only OpenBLAS, numpy's and scipy's BLAS: torch's own thread pool is left alone.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            namespace="gzipscale-test",
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(session, config, items):
    """Run ``@pytest.mark.isolated`` tests after all others, keeping the order within each group.

    They start their own Ray clusters (tests/test_cluster.py explains how they stay clear of
    the shared ``ray_cluster``); running them last also means that, should one of them ever
    have to fall back to ``ray stop``, no test that needs the shared cluster comes after it.
    """
    isolated = [item for item in items if item.get_closest_marker("isolated")]
    if isolated:
        items[:] = [item for item in items if not item.get_closest_marker("isolated")] + isolated
