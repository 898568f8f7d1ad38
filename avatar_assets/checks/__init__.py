"""QA gates: partitioned blocking asset checks whose metadata explains the verdict in numbers and words."""
