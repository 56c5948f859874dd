"""Prompt embeddings: FLUX's text encoders run once per prompt, then the cache answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainset.errors import InputError
from trainset.focus.genfocus.backends import DEBLUR_PROMPT
from trainset.focus.genfocus.pretrained import prompt_cache_path, prompt_embeddings
from trainset.testing.genfocus_models import write_tiny_flux, write_tiny_text_encoders


@pytest.fixture(scope="module")
def flux_with_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    flux = tmp_path_factory.mktemp("text") / "flux"
    write_tiny_flux(flux)
    write_tiny_text_encoders(flux)
    return flux


def test_text_encoders_run_once_then_the_cache_answers(
    flux_with_text: Path, tmp_path: Path
) -> None:
    embeds, pooled = prompt_embeddings(flux_with_text, DEBLUR_PROMPT, tmp_path)
    assert embeds.shape == (1, 512, 32) and pooled.shape == (1, 16)
    assert prompt_cache_path(flux_with_text, DEBLUR_PROMPT, tmp_path).is_file()
    for name in ("text_encoder", "text_encoder_2"):  # the cache alone must answer now
        (flux_with_text / name).rename(tmp_path / name)
    try:
        again = prompt_embeddings(flux_with_text, DEBLUR_PROMPT, tmp_path)
    finally:
        for name in ("text_encoder", "text_encoder_2"):
            (tmp_path / name).rename(flux_with_text / name)
    torch.testing.assert_close(again[0], embeds, rtol=0, atol=0)
    torch.testing.assert_close(again[1], pooled, rtol=0, atol=0)


def test_embeddings_are_t5_hidden_states_and_clip_pooled_output(
    flux_with_text: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    embeds, pooled = prompt_embeddings(flux_with_text, DEBLUR_PROMPT, tmp_path)
    t5_tok = AutoTokenizer.from_pretrained(flux_with_text / "tokenizer_2")
    ids = t5_tok(DEBLUR_PROMPT, padding="max_length", max_length=512, return_tensors="pt").input_ids
    clip_tok = AutoTokenizer.from_pretrained(flux_with_text / "tokenizer")
    clip_ids = clip_tok(
        DEBLUR_PROMPT, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = T5EncoderModel.from_pretrained(flux_with_text / "text_encoder_2")(ids)[0]
        clip = CLIPTextModel.from_pretrained(flux_with_text / "text_encoder")(
            clip_ids
        ).pooler_output
    torch.testing.assert_close(embeds, hidden, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pooled, clip, rtol=1e-6, atol=1e-6)


def test_a_corrupt_cache_names_the_file(flux_with_text: Path, tmp_path: Path) -> None:
    path = prompt_cache_path(flux_with_text, DEBLUR_PROMPT, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"broken")
    with pytest.raises(InputError, match=rf"{path}: unreadable prompt cache"):
        prompt_embeddings(flux_with_text, DEBLUR_PROMPT, tmp_path)
