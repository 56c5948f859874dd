from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainset.focus.genfocus import GenFocusModel, from_pretrained
from trainset.focus.genfocus.model import (
    image_ids,
    pack_latents,
    tile_starts,
    tile_weights,
    unpack_latents,
)
from trainset.testing.genfocus_models import (
    flux_scheduler,
    prompt_tensors,
    tiny_transformer,
    tiny_vae,
    write_tiny_flux,
    write_tiny_lora,
)


def make_model(seed: int = 0) -> GenFocusModel:
    return GenFocusModel(tiny_transformer(seed, layers=2), tiny_vae(seed), flux_scheduler())


def random_inputs(rows: int, cols: int, n_cond: int = 1, batch: int = 1, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, rows * cols, 64, generator=gen)
    conds = [torch.randn(batch, rows * cols, 64, generator=gen) for _ in range(n_cond)]
    embeds, pooled = prompt_tensors()
    return latents, conds, embeds, pooled


def test_velocity_without_conditions_equals_diffusers_forward() -> None:
    model = make_model()
    latents, _, embeds, pooled = random_inputs(3, 4, batch=2)
    ours = model.velocity(latents, [], embeds, pooled, 0.7, 3.5, grid=(3, 4))
    with torch.no_grad():
        reference = model.transformer(
            hidden_states=latents,
            encoder_hidden_states=embeds.expand(2, -1, -1),
            pooled_projections=pooled.expand(2, -1),
            timestep=torch.full((2,), 0.7),
            img_ids=image_ids(3, 4),
            txt_ids=torch.zeros(embeds.shape[1], 3),
            guidance=torch.full((2,), 3.5),
            return_dict=False,
        )[0]
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_lora_leaves_text_and_main_branches_unchanged(tmp_path: Path) -> None:
    model = make_model()
    latents, _, embeds, pooled = random_inputs(3, 4)
    before = model.velocity(latents, [], embeds, pooled, 0.5, 3.5, grid=(3, 4))
    model.load_lora(write_tiny_lora(tmp_path / "l.safetensors", model.transformer), "deblurring")
    after = model.velocity(latents, [], embeds, pooled, 0.5, 3.5, grid=(3, 4))
    # a LoRA merged into the base weights would change the main branch
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_lora_changes_the_output_through_condition_branches(tmp_path: Path) -> None:
    model = make_model()
    latents, conds, embeds, pooled = random_inputs(3, 4)
    base = model.velocity(latents, conds, embeds, pooled, 0.5, 3.5, grid=(3, 4))
    model.load_lora(write_tiny_lora(tmp_path / "l.safetensors", model.transformer), "deblurring")
    adapted = model.velocity(latents, conds, embeds, pooled, 0.5, 3.5, grid=(3, 4))
    assert (adapted - base).abs().max() > 1e-3


def test_condition_lora_scale_is_one_whatever_lora_alpha_says(tmp_path: Path) -> None:
    latents, conds, embeds, pooled = random_inputs(3, 4)
    outputs = []
    for alpha in (None, 16):
        model = make_model()
        meta = (
            None
            if alpha is None
            else {"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": alpha})}
        )
        path = write_tiny_lora(tmp_path / f"l{alpha}.safetensors", model.transformer, metadata=meta)
        model.load_lora(path, "bokeh")
        outputs.append(model.velocity(latents, conds, embeds, pooled, 0.5, 1.0, grid=(3, 4)))
    # scale 2 (alpha 16 / r 4) would move the output by ~1e-2
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_lora_on_a_shared_module_equals_merged_weights_at_alpha_over_rank(tmp_path: Path) -> None:
    latents, conds, embeds, pooled = random_inputs(3, 4)
    meta = {"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 8})}
    model = make_model()
    path = write_tiny_lora(
        tmp_path / "c.safetensors", model.transformer, metadata=meta, switched=False
    )
    model.load_lora(path, "bokeh")
    ours = model.velocity(latents, conds, embeds, pooled, 0.5, 1.0, grid=(3, 4))
    merged = make_model()
    state = load_file(str(path))
    a = state["transformer.context_embedder.lora_A.weight"]
    b = state["transformer.context_embedder.lora_B.weight"]
    with torch.no_grad():
        merged.transformer.context_embedder.weight += 2.0 * b @ a
    expected = merged.velocity(latents, conds, embeds, pooled, 0.5, 1.0, grid=(3, 4))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_tiled_and_untiled_denoising_agree_on_a_single_tile() -> None:
    model = make_model()
    latents, conds, embeds, pooled = random_inputs(32, 32, n_cond=2)
    kw = {"height": 512, "width": 512, "steps": 2, "guidance": 1.0}
    untiled = model.denoise(latents, conds, embeds, pooled, tiled=False, **kw)
    tiled = model.denoise(latents, conds, embeds, pooled, tiled=True, **kw)
    torch.testing.assert_close(tiled, untiled, rtol=1e-5, atol=1e-5)


def recording_velocity(calls: list[str], label: str) -> Callable[..., torch.Tensor]:
    """A stand-in for a velocity method: appends ``label`` to ``calls``, returns the latents."""

    def velocity(latents: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(label)
        return latents

    return velocity


def test_tiling_switches_on_when_both_sides_reach_512_px(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    calls: list[str] = []
    monkeypatch.setattr(model, "tiled_velocity", recording_velocity(calls, "tiled"))
    monkeypatch.setattr(model, "velocity", recording_velocity(calls, "plain"))
    embeds, pooled = prompt_tensors()
    for height, width in ((512, 512), (496, 1024)):
        latents = torch.zeros(1, (height // 16) * (width // 16), 64)
        model.denoise(
            latents, [], embeds, pooled, height=height, width=width, steps=1, guidance=1.0
        )
    assert calls == ["tiled", "plain"]


def transcribed_tile_origins(n: int) -> list[int]:
    """genfocus.md: tiles of 32 every 28, the last one aligned to the end of the axis."""
    origins = [int(o) for o in np.arange(0, max(1, n - 32 + 1), 28)]
    if origins[-1] + 32 < n:
        origins.append(n - 32)
    return origins


@pytest.mark.parametrize("n", [32, 33, 59, 60, 61, 64, 100])
def test_tile_origins_follow_the_official_rule(n: int) -> None:
    assert tile_starts(n) == transcribed_tile_origins(n)


def test_tile_weights_are_gaussian_over_minus_two_to_two() -> None:
    u = np.linspace(-2, 2, 32)
    expected = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2)).ravel()
    np.testing.assert_allclose(tile_weights().numpy(), expected, rtol=1e-6)


def test_denoise_steps_through_flux_shifted_sigmas(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    seen: list[float] = []

    def fake_velocity(latents, conds, embeds, pooled, sigma, guidance, **kw):
        seen.append(float(sigma[0]))
        return torch.ones_like(latents)

    monkeypatch.setattr(model, "velocity", fake_velocity)
    embeds, pooled = prompt_tensors()
    steps, n = 4, 6 * 8
    out = model.denoise(
        torch.zeros(1, n, 64), [], embeds, pooled, height=96, width=128, steps=steps, guidance=3.5
    )
    mu = n * (1.15 - 0.5) / (4096 - 256) + 0.5 - 256 * (1.15 - 0.5) / (4096 - 256)
    sigmas = [
        math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in np.linspace(1.0, 1 / steps, steps)
    ]
    np.testing.assert_allclose(seen, sigmas, rtol=1e-6)
    # Euler with velocity 1 from sigma_0 down to 0 moves every value by -sigma_0
    torch.testing.assert_close(out, torch.full_like(out, -sigmas[0]), rtol=1e-5, atol=1e-6)


def test_encode_condition_samples_the_posterior_with_the_given_noise() -> None:
    model = make_model()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 32, 48, generator=gen) * 2 - 1
    eps = torch.randn(1, 16, 4, 6, generator=gen)
    tokens = model.encode_condition(x, eps)
    with torch.no_grad():
        dist = model.vae.encode(x).latent_dist
    z = (dist.mean + dist.std * eps - 0.1159) * 0.3611
    expected = torch.stack(
        [
            z[0, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(16, 4).reshape(-1)
            for r in range(2)
            for c in range(3)
        ]
    )[None]
    torch.testing.assert_close(tokens, expected, rtol=1e-6, atol=1e-6)


def test_unpack_inverts_pack() -> None:
    z = torch.randn(2, 16, 6, 8)
    torch.testing.assert_close(unpack_latents(pack_latents(z), 48, 64), z, rtol=0, atol=0)


def test_decode_gives_images_in_zero_one_of_the_asked_size() -> None:
    model = make_model()
    image = model.decode(torch.randn(2, 6, 64), 32, 48)
    assert image.shape == (2, 3, 32, 48)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_from_pretrained_loads_the_saved_weights_and_lora(tmp_path: Path) -> None:
    transformer = write_tiny_flux(tmp_path / "flux")
    lora = write_tiny_lora(tmp_path / "deblurNet.safetensors", transformer)
    model = from_pretrained(tmp_path / "flux", lora, "deblurring")
    for name, value in transformer.state_dict().items():
        torch.testing.assert_close(model.transformer.state_dict()[name], value, rtol=0, atol=0)
    state = load_file(str(lora))
    assert model.active_adapter == "deblurring"
    for name, weights in model.adapters["deblurring"].items():
        torch.testing.assert_close(weights.down, state[f"transformer.{name}.lora_A.weight"])
        torch.testing.assert_close(weights.up, state[f"transformer.{name}.lora_B.weight"])
    assert 2 * len(model.adapters["deblurring"]) == len(state)


def test_reloading_an_adapter_replaces_it(tmp_path: Path) -> None:
    latents, conds, embeds, pooled = random_inputs(3, 4)
    model = make_model()
    path = write_tiny_lora(tmp_path / "c.safetensors", model.transformer, switched=False)
    model.load_lora(path, "bokeh")
    once = model.velocity(latents, conds, embeds, pooled, 0.5, 1.0, grid=(3, 4))
    model.load_lora(path, "bokeh")
    twice = model.velocity(latents, conds, embeds, pooled, 0.5, 1.0, grid=(3, 4))
    torch.testing.assert_close(twice, once, rtol=0, atol=0)
