"""Fast batch readers over shards, samplers, buffer reuse and on-device augmentation."""

from trainset.loading.augment import N_D4, apply_d4, d4_codes, d4_copy_into, d4_view
from trainset.loading.buffers import BatchBuffers, fill_batch
from trainset.loading.dataset import (
    BatchRows,
    ShardDataset,
    copy_batch,
    keep_batch,
    shard_dataloader,
)
from trainset.loading.loader import AUGMENT_MODES, ThreadedLoader
from trainset.loading.ring import RingLoader, default_threads
from trainset.loading.sampler import EpochSampler, SampleBatch
from trainset.loading.shards import ReadPlan, ShardInfo, ShardReader
from trainset.loading.trainer import TrainerLoader, process_group

__all__ = [
    "AUGMENT_MODES",
    "N_D4",
    "BatchBuffers",
    "BatchRows",
    "EpochSampler",
    "ReadPlan",
    "RingLoader",
    "SampleBatch",
    "ShardDataset",
    "ShardInfo",
    "ShardReader",
    "ThreadedLoader",
    "TrainerLoader",
    "apply_d4",
    "copy_batch",
    "d4_codes",
    "d4_copy_into",
    "d4_view",
    "default_threads",
    "fill_batch",
    "keep_batch",
    "process_group",
    "shard_dataloader",
]
