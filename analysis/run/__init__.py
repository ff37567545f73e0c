"""Floor 5: running experiments elsewhere: task types, the local and Ray executors, the cluster, sharded sweeps."""
