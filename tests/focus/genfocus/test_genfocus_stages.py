"""The deblur and render stages with GenFocus end to end, on tiny random models saved in
FLUX.1-dev's diffusers layout and loaded through the real paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainset.cli import build_parser, main
from trainset.focus.genfocus.backends import (
    BOKEH_PROMPT,
    DEBLUR_PROMPT,
    GenFocusDeblur,
    GenFocusRenderer,
    working_size,
)
from trainset.store import read_json, read_png
from trainset.testing.genfocus_models import (
    tiny_transformer,
    write_prompt,
    write_tiny_flux,
    write_tiny_lora,
)


@pytest.fixture(scope="module")
def tiny_genfocus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny FLUX folder, both LoRA files and the cached prompts of both models."""
    root = tmp_path_factory.mktemp("genfocus")
    transformer = write_tiny_flux(root / "flux")
    paths = {
        "flux": root / "flux",
        "deblur": write_tiny_lora(root / "deblurNet.safetensors", transformer, seed=11),
        "bokeh": write_tiny_lora(root / "bokehNet.safetensors", transformer, seed=12),
        "cache": root / "cache",
    }
    for prompt in (DEBLUR_PROMPT, BOKEH_PROMPT):
        write_prompt(paths["flux"], prompt, paths["cache"])
    return paths


def options(paths: dict[str, Path], model: str, **extra: str) -> dict[str, str]:
    return {
        "flux_dir": str(paths["flux"]),
        "lora": str(paths[model]),
        "cache_dir": str(paths["cache"]),
        "steps": "2",
        **extra,
    }


def argv_options(flag: str, opts: dict[str, str]) -> list[str]:
    return [word for key, value in opts.items() for word in (flag, f"{key}={value}")]


def test_deblur_and_render_run_end_to_end_on_demo_data(
    indexed_small: Path, tiny_genfocus: dict[str, Path]
) -> None:
    out = str(indexed_small)
    deblur = argv_options("--backend-option", options(tiny_genfocus, "deblur"))
    assert main(["focus", "deblur", "--out-root", out, "--backend", "genfocus", *deblur]) == 0
    assert main(["focus", "depth", "--out-root", out]) == 0
    render = argv_options("--renderer-option", options(tiny_genfocus, "bokeh"))
    argv = ["focus", "render", "--out-root", out, "--max-coc", "0.0005", "--sets", "2"]
    assert main([*argv, "--renderer", "genfocus", *render]) == 0
    assert main(["focus", "validate", "--out-root", out]) == 0
    scene = sorted(p for p in indexed_small.iterdir() if (p / "frames_sharp").is_dir())[0]
    raw = read_png(sorted((scene.parent.parent / "raw" / scene.name).glob("*.png"))[0])
    sharp = read_png(scene / "frames_sharp" / "frame_0000.png")
    render_png = read_png(scene / "bokeh_renders" / "set_01" / "bokeh_0005.png")
    assert sharp.shape == render_png.shape == raw.shape == (32, 48, 3)
    assert not np.array_equal(sharp, raw)
    meta = read_json(scene / "metadata.json")
    assert meta["renderer"] == "genfocus"
    assert meta["renderer_params"]["prompt"] == BOKEH_PROMPT
    assert [s["working_size"] for s in meta["renderer_sets"]] == [[32, 48], [32, 48]]
    k_diam = [
        s["f"] ** 2 / s["N"] * 48 / 0.036 for s in meta["sets"]
    ]  # plan CoC model: K_diam = f^2 / N * width / sensor width
    np.testing.assert_allclose(
        [s["genfocus_K"] for s in meta["renderer_sets"]], np.array(k_diam) / 2
    )


def test_frames_of_a_scene_share_their_noise_seeded_by_the_scene(
    tiny_genfocus: dict[str, Path],
) -> None:
    backend = GenFocusDeblur(**options(tiny_genfocus, "deblur", batch_size="2"))
    rng = np.random.default_rng(0)
    frame, other = (rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(2))
    first, _, last = backend.sharpen([frame, other, frame], scene_id="scene_a")
    assert np.array_equal(first, last)  # the same frame in two batches: same noise
    (elsewhere,) = backend.sharpen([frame], scene_id="scene_b")
    assert not np.array_equal(first, elsewhere)


def test_deblur_halves_the_batch_once_on_cuda_out_of_memory(
    tiny_genfocus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainset.focus.genfocus import backends

    backend = GenFocusDeblur(**options(tiny_genfocus, "deblur", batch_size="4"))
    model = backends.loaded_model(backend.options).model
    real = model.denoise
    sizes: list[int] = []

    def denoise(init, *args, **kwargs):
        sizes.append(init.shape[0])
        if init.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(init, *args, **kwargs)

    monkeypatch.setattr(model, "denoise", denoise)
    frames = [np.full((32, 48, 3), 100 + i, dtype=np.uint8) for i in range(4)]
    assert len(list(backend.sharpen(frames, scene_id="s"))) == 4
    assert sizes == [4, 2, 2]


def test_building_a_backend_hashes_options_without_loading_weights(
    tiny_genfocus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainset.focus.genfocus import backends

    monkeypatch.setattr(backends, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    params = GenFocusRenderer(**options(tiny_genfocus, "bokeh")).params()
    assert params["lora"] == str(tiny_genfocus["bokeh"].resolve())
    assert (params["steps"], params["guidance"], params["seed"]) == (2, 1.0, 1234)
    assert params["prompt"] == BOKEH_PROMPT and params["adapter"] == "bokeh"


def run_deblur(
    out: Path, opts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    argv = ["focus", "deblur", "--out-root", str(out), "--backend", "genfocus"]
    code = main([*argv, *argv_options("--backend-option", opts)])
    return code, capsys.readouterr().err


def test_missing_weights_exit_2_naming_the_file(
    indexed_small: Path,
    tiny_genfocus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flux = tmp_path / "flux"
    write_tiny_flux(flux)
    (flux / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    opts = {**options(tiny_genfocus, "deblur"), "flux_dir": str(flux)}
    code, err = run_deblur(indexed_small, opts, capsys)
    assert code == 2
    assert (
        f"{flux / 'transformer'}: key 'diffusion_pytorch_model.safetensors': weights not found"
        in err
    )


def test_lora_for_another_base_exits_2_naming_file_and_key(
    indexed_small: Path,
    tiny_genfocus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tiny_transformer(heads=3)  # a wider model: 48 features instead of 32
    lora = write_tiny_lora(tmp_path / "other.safetensors", other)
    code, err = run_deblur(
        indexed_small, {**options(tiny_genfocus, "deblur"), "lora": str(lora)}, capsys
    )
    assert code == 2
    key = "transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight"
    assert f"{lora}: key '{key}': LoRA for another base model: lora_A shape" in err
    assert "(expected (r, 32), found (4, 48))" in err


def test_wrong_adapter_name_exits_2_naming_file_and_key(
    indexed_small: Path, tiny_genfocus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_deblur(
        indexed_small, {**options(tiny_genfocus, "deblur"), "adapter": "deblur"}, capsys
    )
    assert code == 2
    assert f"{tiny_genfocus['deblur']}: key 'adapter': unknown GenFocus adapter name" in err


def test_uncached_prompt_without_text_encoders_exits_2(
    indexed_small: Path,
    tiny_genfocus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    opts = {**options(tiny_genfocus, "deblur"), "cache_dir": str(tmp_path / "empty")}
    code, err = run_deblur(indexed_small, opts, capsys)
    assert code == 2
    assert f"{tiny_genfocus['flux'] / 'text_encoder'}: key 'text_encoder'" in err


def test_run_passes_genfocus_options_to_its_steps(tmp_path: Path) -> None:
    from trainset.focus.cli import run_config

    argv = ["focus", "run", "--raw-root", str(tmp_path / "raw"), "--out-root", str(tmp_path / "o")]
    argv += ["--max-coc", "0.001", "--deblur-backend", "genfocus", "--deblur-option", "lora=a"]
    argv += [
        "--renderer",
        "genfocus",
        "--renderer-option",
        "lora=b",
        "--renderer-option",
        "steps=8",
    ]
    config = run_config(build_parser().parse_args(argv))
    assert (config.deblur.backend, config.deblur.options) == ("genfocus", (("lora", "a"),))
    assert config.render.renderer == "genfocus"
    assert config.render.renderer_options == (("lora", "b"), ("steps", "8"))


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [((32, 48), 0, (32, 48)), ((30, 50), 0, (32, 64)), ((720, 1280), 1024, (576, 1024))],
)
def test_working_size_is_a_multiple_of_16(
    size: tuple[int, int], long_side: int, expected: tuple[int, int]
) -> None:
    assert working_size(*size, long_side) == expected


def test_slurm_runs_genfocus_steps_with_flux_resources() -> None:
    from trainset.focus.config import DeblurConfig, RenderConfig, RunConfig
    from trainset.focus.steps import GENFOCUS_RESOURCES, RESOURCES, default_resources

    deblur = RunConfig(Path("r"), Path("o"), deblur=DeblurConfig(backend="genfocus"))
    assert default_resources(deblur) == {**RESOURCES, "deblur": GENFOCUS_RESOURCES["deblur"]}
    render = RunConfig(Path("r"), Path("o"), render=RenderConfig(renderer="genfocus"))
    assert default_resources(render) == {**RESOURCES, "render": GENFOCUS_RESOURCES["render"]}


def test_without_diffusers_the_backend_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from trainset.errors import InputError
    from trainset.focus import deblur
    from trainset.focus.deblur import make_deblur_backend

    monkeypatch.delitem(
        deblur._REGISTRY._factories, "genfocus", raising=False
    )  # as in a new process
    for name in [m for m in sys.modules if m.startswith(("diffusers", "trainset.focus.genfocus"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(InputError, match=r"pip install 'trainset\[genfocus\]'"):
        make_deblur_backend("genfocus", flux_dir="f", lora="l")
