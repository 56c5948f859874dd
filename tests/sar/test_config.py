"""`trainset sar patches` options come from TilingConfig: defaults, parsing, JSON form."""

from __future__ import annotations

import dataclasses

from trainset.cli import build_parser, main
from trainset.cli_tools import config_dict, from_args, options_of
from trainset.sar.config import ClipSpec, QualityFilter, TilingConfig


def test_every_tiling_parameter_is_an_option_of_sar_patches():
    assert [f.name for f, _ in options_of(TilingConfig)] == [
        f.name for f in dataclasses.fields(TilingConfig)
    ]
    args = build_parser().parse_args(["sar", "patches", "x.tif", "--out", "o"])
    assert from_args(TilingConfig, args) == TilingConfig()


def test_options_given_on_the_command_line_reach_the_config():
    argv = ["sar", "patches", "x.tif", "--out", "o", "--patch-size", "64", "--stride", "32"]
    argv += ["--units", "db", "--clip", "sigma:2.5", "--quality", "0,1,0.5", "--bands", "2,1"]
    argv += ["--band-mode", "stack", "--shard-size", "10", "--dtype", "float16"]
    args = build_parser().parse_args(argv)
    assert from_args(TilingConfig, args) == TilingConfig(
        patch_size=64,
        stride=32,
        units="db",
        clip=ClipSpec("sigma", (2.5,)),
        quality=QualityFilter(0.0, 1.0, 0.5),
        bands=(2, 1),
        band_mode="stack",
        shard_size=10,
        dtype="float16",
    )


def test_the_json_form_reads_back_as_the_same_config():
    config = TilingConfig(
        patch_size=48,
        clip=ClipSpec.parse("fixed:-22.5,4"),
        quality=QualityFilter(0.05, 0.95, 0.75),
        bands=(1, 3),
    )
    assert TilingConfig.from_dict(config_dict(config)) == config


def test_the_defaults_print_as_they_are_typed():
    assert (str(ClipSpec()), str(QualityFilter())) == ("percentile:1,99", "0.01,0.99,0.9")


def test_a_bad_clip_option_exits_2_naming_it(capsys):
    assert main(["sar", "patches", "x.tif", "--out", "o", "--clip", "median:1"]) == 2
    assert "key 'clip': unknown clip method" in capsys.readouterr().err
