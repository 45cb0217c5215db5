"""Random PCFGs, a fast exact document sampler, gzip scoring and Ray Data shards."""
