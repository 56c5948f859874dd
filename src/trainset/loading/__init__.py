"""Fast batch readers over shards, samplers, buffer reuse and on-device augmentation."""
