"""Identity assets, partitioned by avatar: the reusable avatar built from one upload."""
