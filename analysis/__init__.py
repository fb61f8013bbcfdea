"""Results of a search: targets, ranking and best-config export."""
