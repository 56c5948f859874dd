"""One rank of a real two-process ``torch.distributed`` (gloo) run over a SARDataModule.

Run as ``python ddp_rank.py ROOT STORE RANK WORLD OUT``: joins the group through the file
store, reads one epoch of lazy train and val batches, and writes the record ids (pixel (0, 0)
of record r holds r * 1000) it saw to OUT as JSON.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from trainset.sar.datamodule import SARDataModule


def main(root: str, store: str, rank: int, world: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        dm = SARDataModule(root, val_fraction=0.3, batch_size=2, seed=3, augment_train=False)
        seen = {}
        for name, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
            seen[name] = [[int(v) // 1000 for v in batch[:, 0, 0, 0].tolist()] for batch in loader]
        counts = torch.tensor([len(seen["train"])])
        dist.all_reduce(counts)  # the group really is one: both ranks take part
        seen["train_batches_all_ranks"] = int(counts.item())
        with open(out, "w") as fh:
            json.dump(seen, fh)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
