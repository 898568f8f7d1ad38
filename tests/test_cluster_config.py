"""The cluster's pieces that need no running cluster: the queue a run goes to, read from its own plan, and
`scripts/cluster.py` refusing bad configuration with a sentence (tests/test_cluster.py runs the real thing)."""

from __future__ import annotations

import dagster as dg
import pytest

from avatar_assets.cluster.launcher import run_queue
from tests.cluster_helpers import cluster_env, run_script, script


@dg.asset
def plain() -> int:
    return 1


@dg.asset(pool="gpu", deps=[plain])
def rendered() -> int:
    return 2


@pytest.mark.parametrize(("selection", "queue"), [([plain], "cpu"), ([plain, rendered], "gpu"), ([rendered], "gpu")])
def test_a_run_with_a_gpu_pool_step_goes_to_the_gpu_queue(selection, queue):
    with dg.instance_for_test() as instance:
        result = dg.materialize([plain, rendered], instance=instance, selection=selection)
        assert run_queue(instance, instance.get_run_by_id(result.run_id)) == queue


def test_the_avatar_graph_routes_identity_to_gpu():
    """build_identity holds the image-model stages (pool="gpu"); its plan says so, not a list of ours."""
    from avatar_assets.definitions import defs

    job = defs.resolve_job_def("build_identity")
    pools = {node.name: node.definition.pool for node in job.graph.node_dict.values() if hasattr(node.definition, "pool")}
    assert "gpu" in pools.values() and None in pools.values()


def test_worker_queues_follow_the_gpu_worker_count(tmp_path):
    assert script.Spec(root=tmp_path, workers=2).worker_queues() == [("worker1", ["cpu", "gpu"]), ("worker2", ["cpu", "gpu"])]
    assert script.Spec(root=tmp_path, workers=3, gpu_workers=1).worker_queues() == [
        ("gpu1", ["gpu"]), ("cpu1", ["cpu"]), ("cpu2", ["cpu"])]


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "workers: Input should be greater than or equal to 1"),
    (["--workers", "2", "--gpu-workers", "2"], "at least one worker must take the cpu queue"),
])
def test_bad_configuration_is_one_sentence(args, message, tmp_path):
    done = run_script("up", "--root", str(tmp_path / "c"), *args, env=cluster_env(), timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "c").exists(), "nothing was started"


def test_down_without_a_cluster_says_so(tmp_path):
    done = run_script("down", "--root", str(tmp_path), env=cluster_env(), timeout=120)
    assert done.returncode == 0 and "nothing running" in done.stdout


def test_a_folder_that_is_not_a_cluster_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    done = run_script("up", "--root", str(tmp_path), env=cluster_env(), timeout=120)
    assert done.returncode == 1 and "not a cluster folder" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_unreachable_service_is_one_sentence(tmp_path):
    env = cluster_env(CLUSTER_BACKEND_URL="redis://127.0.0.1:1/0")
    done = run_script("up", "--root", str(tmp_path / "c"), env=env, timeout=120)
    assert done.returncode == 1 and "does not answer" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "c" / "state.json").exists()


def test_a_started_task_whose_worker_does_not_answer_fails_its_run():
    """The health check against the machine's broker and Redis, no workers: a task recorded STARTED by a
    worker that is gone (what a SIGKILL leaves) is FAILED, not RUNNING forever; other states pass through."""
    import uuid

    from avatar_assets.cluster.launcher import AvatarCeleryRunLauncher
    from avatar_assets.dagster_compat import WorkerStatus

    spec = script.Spec(root=".")
    try:
        script._check_backend(spec)
    except script.ClusterError as error:
        pytest.skip(str(error))
    launcher = AvatarCeleryRunLauncher(default_queue="cpu", broker=spec.broker, backend=spec.backend)

    def health(state: str, meta: dict) -> tuple:
        task_id = f"test-{uuid.uuid4()}"
        launcher.celery.backend.store_result(task_id, meta, state)
        run = dg.DagsterRun(job_name="any", run_id=str(uuid.uuid4()), tags={"dagster-celery/task_id": task_id})
        result = launcher.check_run_worker_health(run)
        return result.status, result.msg

    status, message = health("STARTED", {"hostname": "ghost@nowhere", "pid": 1})
    assert status == WorkerStatus.FAILED and "ghost@nowhere" in message
    assert health("SUCCESS", 0)[0] == WorkerStatus.SUCCESS
    assert health("FAILURE", {"exc_type": "WorkerLostError", "exc_message": "lost"})[0] == WorkerStatus.FAILED
