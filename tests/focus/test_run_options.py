"""Every option of a focus stage command is reachable from `trainset focus run`, by construction:
the options of both come from the stage's config dataclass (trainset.focus.config)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trainset.cli import build_parser
from trainset.cli_tools import options_of
from trainset.focus.cli import run_config
from trainset.focus.config import (
    CalibrateConfig,
    DeblurConfig,
    DepthConfig,
    IndexConfig,
    LensConfig,
    RenderConfig,
    RunConfig,
)

# Options that choose what to work on or how, not what the work produces.
SELECTION = {"-h", "--help", "--out-root", "--out_root", "--raw-root", "--raw_root", "--scene",
             "--task-index", "--task_index", "--workers", "--force", "--only", "--max-coc",
             "--max_coc"}  # fmt: skip
STAGES = {
    "index": (IndexConfig,),
    "deblur": (DeblurConfig,),
    "depth": (DepthConfig,),
    "calibrate": (CalibrateConfig, LensConfig),
    "render": (LensConfig, RenderConfig),
}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` (argparse holds them in its one subparsers action)."""
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _commands() -> dict[str, argparse.ArgumentParser]:
    return _subcommands(_subcommands(build_parser())["focus"])


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


@pytest.mark.parametrize("command", sorted(STAGES))
def test_every_option_of_a_stage_command_is_a_config_field_and_an_option_of_run(command):
    commands = _commands()
    stage, run = _options(commands[command]), _options(commands["run"])
    declared = {
        opt.flag: opt.run_flag or opt.flag for cls in STAGES[command] for _, opt in options_of(cls)
    }
    assert {o for o in stage - SELECTION if not o.count("_")} == set(declared)
    missing = [
        f"{flag} (run: {run_flag})" for flag, run_flag in declared.items() if run_flag not in run
    ]
    assert missing == []


def test_every_config_of_a_run_is_built_from_its_options(tmp_path):
    args = build_parser().parse_args(
        ["focus", "run", "--raw-root", "r", "--out-root", "o", "--sharpness-ratio", "0.3",
         "--median-range", "1", "9", "--depth-option", "k=v", "--sets", "2",
         "--output-plot", "p.png", "--renderer-option", "steps=4", "--seed", "7"]
    )  # fmt: skip
    config = run_config(args)
    assert config == RunConfig(
        Path("r"),
        Path("o"),
        index=IndexConfig(seed=7),
        deblur=DeblurConfig(sharpness_ratio=0.3),
        depth=DepthConfig(median_range=(1.0, 9.0), options=(("k", "v"),)),
        calibrate=CalibrateConfig(output_plot="p.png"),
        lens=LensConfig(sets=2),
        render=RenderConfig(renderer_options=(("steps", "4"),)),
    )
