"""The distributed engine: dagster-celery's run launcher and workers, configured for the avatar graph.

`launcher.py` is loaded by the instance (daemon, webserver) and decides each run's queue and whether its
worker is alive; `worker.py` is the Celery app the workers run. `make cluster` (scripts/cluster.py)
starts them on loopback; deploy/README.md says how the same pieces run on ECS or Kubernetes.
"""

WORKER_TAG = "avatar/worker"
"""The run tag naming the Celery node that executed a run (written by worker.py, shown by `avatarops status`);
here, not in launcher.py, so that readers need not import Celery."""
