"""Video assets, partitioned by avatar x output: one cell is one video of one avatar."""
