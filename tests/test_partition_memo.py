"""A run asks the instance whether its partitions exist once, not for every input and output it handles.

dagster 1.13 checks the partition again for each input and output context of a step (460 queries of the
instance's storage for 5 identity runs, 1.3-1.6 s: bench/README.md, issue 16). `runner.execute` remembers the
partitions a run found, for that run and in its own thread only; these tests pin that on a real
instance, and that nothing outside the run sees a remembered answer.
"""

from __future__ import annotations

import threading

import dagster as dg

from avatar_assets.ops.runner import partitions_remembered


def counted_lookups(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """Every question that reaches the storage, as (partitions name, key)."""
    asked: list[tuple[str, str]] = []
    storage_lookup = instance.has_dynamic_partition

    def counting(partitions_def_name: str, partition_key: str) -> bool:
        asked.append((partitions_def_name, partition_key))
        return storage_lookup(partitions_def_name, partition_key)

    instance.has_dynamic_partition = counting
    return asked


def test_a_found_partition_is_asked_once_a_missing_one_every_time(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("avatars", ["amy"])
        asked = counted_lookups(instance)
        with partitions_remembered(instance):
            assert all(instance.has_dynamic_partition("avatars", "amy") for _ in range(3))
            assert not instance.has_dynamic_partition("avatars", "bob")
            assert not instance.has_dynamic_partition(partitions_def_name="avatars", partition_key="bob")
            instance.add_dynamic_partitions("avatars", ["bob"])
            assert instance.has_dynamic_partition("avatars", "bob")
        assert asked == [("avatars", "amy"), ("avatars", "bob"), ("avatars", "bob"), ("avatars", "bob")]


def test_other_threads_and_later_callers_get_the_storage_answer(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("avatars", ["amy"])
        asked = counted_lookups(instance)
        counting = instance.has_dynamic_partition
        seen_elsewhere = []
        with partitions_remembered(instance):
            assert instance.has_dynamic_partition("avatars", "amy")
            instance.delete_dynamic_partition("avatars", "amy")  # a revoke, while the run goes on
            assert instance.has_dynamic_partition("avatars", "amy")  # the run keeps its partition
            other = threading.Thread(target=lambda: seen_elsewhere.append(instance.has_dynamic_partition("avatars", "amy")))
            other.start()
            other.join()
        assert seen_elsewhere == [False]
        assert instance.has_dynamic_partition == counting  # the storage's lookup is back
        assert not instance.has_dynamic_partition("avatars", "amy")
        assert asked.count(("avatars", "amy")) == 3  # the run once, the other thread once, after the run once
