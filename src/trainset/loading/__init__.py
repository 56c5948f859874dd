"""Fast batch readers over shards, samplers, buffer reuse and on-device augmentation."""

from trainset.loading.shards import ReadPlan, ShardInfo, ShardReader

__all__ = ["ReadPlan", "ShardInfo", "ShardReader"]
