"""One rank of a real two-process ``torch.distributed`` (gloo) run over both datamodules.

Run as ``python ddp_rank.py SAR_ROOT FOCUS_ROOT STORE RANK WORLD OUT``: joins the group
through the file store and reads one epoch of train and val batches of a SARDataModule (the
record id r is pixel (0, 0) // 1000) and of a FocusDataModule (clips as (scene, set, start)).
Then the same happens inside ``Trainer(strategy="ddp").fit`` when lightning is installed
(Lightning finds the group already initialised, as under torchrun) and the model records the
batches. What each part saw goes to OUT as JSON: ``{"plain": ..., "lightning": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from trainset.focus.datamodule import FocusDataModule
from trainset.sar.datamodule import SARDataModule


def patch_ids(batch: torch.Tensor) -> list[int]:
    return [int(v) // 1000 for v in batch[:, 0, 0, 0].tolist()]


def clip_ids(batch: dict[str, Any]) -> list[str]:
    sets, starts = batch["set"].tolist(), batch["start"].tolist()
    return [f"{s}/{k}/{t}" for s, k, t in zip(batch["scene_id"], sets, starts)]


def datamodules(sar_root: str, focus_root: str) -> dict[str, Any]:
    return {
        "sar": SARDataModule(sar_root, val_fraction=0.3, batch_size=2, seed=3, augment_train=False),
        "focus": FocusDataModule(focus_root, batch_size=2, clip_len=2, seed=3),
    }


def plain(sar_root: str, focus_root: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    ids: dict[str, Callable[[Any], list[Any]]] = {"sar": patch_ids, "focus": clip_ids}
    for kind, dm in datamodules(sar_root, focus_root).items():
        for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
            seen[f"{kind}_{split}"] = [ids[kind](batch) for batch in loader]
    counts = torch.tensor([len(seen["sar_train"]), len(seen["focus_train"])])
    dist.all_reduce(counts)  # the group really is one: both ranks take part
    seen["train_batches_all_ranks"] = counts.tolist()
    return seen


def with_lightning(sar_root: str, focus_root: str, world: int) -> dict[str, Any]:
    import lightning

    seen: dict[str, Any] = {}

    class Recorder(lightning.LightningModule):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind
            self.w = torch.nn.Parameter(torch.zeros(1))

        def _ids(self, batch: Any) -> list[Any]:
            return patch_ids(batch) if self.kind == "sar" else clip_ids(batch)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.setdefault(f"{self.kind}_train", []).append(self._ids(batch))
            return self.w.sum() * 0.0 + self.w.sum()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            if not self.trainer.sanity_checking:
                seen.setdefault(f"{self.kind}_val", []).append(self._ids(batch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    for kind, dm in datamodules(sar_root, focus_root).items():
        trainer = lightning.Trainer(
            accelerator="cpu",
            devices=world,
            strategy="ddp",
            max_epochs=1,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Recorder(kind), datamodule=dm)
    return seen


def main(sar_root: str, focus_root: str, store: str, rank: int, world: int, out: str) -> None:
    os.environ.update(
        LOCAL_RANK=str(rank), RANK=str(rank), NODE_RANK="0", WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )  # fmt: skip
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        seen = {"plain": plain(sar_root, focus_root)}
        try:
            import lightning  # noqa: F401
        except ImportError:
            pass
        else:
            seen["lightning"] = with_lightning(sar_root, focus_root, world)
        with open(out, "w") as fh:
            json.dump(seen, fh)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    a = sys.argv
    main(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6])
