"""Both datamodules under a real two-process gloo group, plain torch.distributed and Lightning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainset.focus.datamodule import FocusDataModule
from trainset.sar.datamodule import SARDataModule
from trainset.testing.clip_scenes import write_scene
from trainset.testing.patch_sets import make_patch_set


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    sar = make_patch_set(base / "sar", [10, 8, 12])
    focus = base / "focus"
    for name, split, frames in (("a", "train", 6), ("b", "train", 5), ("c", "val", 5)):
        write_scene(focus, name, split, n_frames=frames)
    return sar, focus


def run_ranks(tmp_path, sets):
    script = Path(__file__).with_name("ddp_rank.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    store = str(tmp_path / "store")
    argv = [[sys.executable, str(script), *map(str, sets), store, str(r), "2", str(outs[r])]
            for r in range(2)]  # fmt: skip
    procs = [subprocess.Popen(a, env=env) for a in argv]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    return [json.loads(o.read_text()) for o in outs]


def check_split(seen, kind, train, val, per_rank_batches):
    per_rank = [[i for b in s[f"{kind}_train"] for i in b] for s in seen]
    assert [len(s[f"{kind}_train"]) for s in seen] == [per_rank_batches] * 2
    assert not set(per_rank[0]) & set(per_rank[1])  # no train item on both ranks
    assert set(per_rank[0]) | set(per_rank[1]) <= train
    val_seen = [i for s in seen for b in s[f"{kind}_val"] for i in b]
    assert set(val_seen) == val  # every val item is evaluated (a batch may be padded in)
    assert len(seen[0][f"{kind}_val"]) == len(seen[1][f"{kind}_val"])


def expected(sets):
    sar, focus = sets
    dm = SARDataModule(sar, val_fraction=0.3, batch_size=2, seed=3)
    dm.setup()
    fdm = FocusDataModule(focus, clip_len=2)
    clips = {
        split: {f"{ds.scene_of(i)}/{ds.clips[i, 1]}/{ds.clips[i, 2]}" for i in range(len(ds))}
        for split, ds in (("train", fdm.train_dataset), ("val", fdm.val_dataset))
    }
    return set(dm.train_indices.tolist()), set(dm.val_indices.tolist()), clips


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, sets):
    """What each of two real ranks saw: plain torch.distributed, then Lightning's DDP."""
    return run_ranks(tmp_path_factory.mktemp("ranks"), sets)


@pytest.mark.parametrize("kind", ["sar", "focus"])
def test_two_real_ranks_split_the_datamodule(ranks, sets, kind):
    seen = [r["plain"] for r in ranks]
    train, val, clips = expected(sets)
    items = {"sar": (train, val), "focus": (clips["train"], clips["val"])}[kind]
    check_split(seen, kind, *items, len(items[0]) // 2 // 2)
    counts = seen[0]["train_batches_all_ranks"][0 if kind == "sar" else 1]
    assert counts == 2 * len(seen[0][f"{kind}_train"])  # all_reduce over the real group


@pytest.mark.parametrize("kind", ["sar", "focus"])
def test_lightning_ddp_fit_splits_the_datamodule(ranks, sets, kind):
    pytest.importorskip("lightning")
    seen = [r["lightning"] for r in ranks]
    train, val, clips = expected(sets)
    items = {"sar": (train, val), "focus": (clips["train"], clips["val"])}[kind]
    check_split(seen, kind, *items, len(items[0]) // 2 // 2)
