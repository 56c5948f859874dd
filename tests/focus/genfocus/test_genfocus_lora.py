from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trainset.errors import InputError
from trainset.focus.genfocus import GenFocusModel
from trainset.focus.genfocus.lora import is_switched
from trainset.testing.genfocus_models import (
    flux_scheduler,
    lora_state,
    tiny_transformer,
    tiny_vae,
    write_tiny_lora,
)


def model() -> GenFocusModel:
    return GenFocusModel(tiny_transformer(), tiny_vae(), flux_scheduler())


@pytest.mark.parametrize(
    ("name", "switched"),
    [
        ("x_embedder", True),
        ("transformer_blocks.3.attn.to_out.0", True),
        ("transformer_blocks.0.ff.net.2", True),
        ("transformer_blocks.0.attn.add_q_proj", False),
        ("transformer_blocks.0.ff.net.0.proj", False),
        ("single_transformer_blocks.7.proj_out", True),
        ("single_transformer_blocks.7.norm.linear", True),
        ("proj_out", False),
        ("context_embedder", False),
    ],
)
def test_switched_modules_are_those_of_the_official_code(name: str, switched: bool) -> None:
    assert is_switched(name) is switched


def test_lora_for_another_base_names_file_and_key(tmp_path: Path) -> None:
    other = tiny_transformer()
    state = lora_state(other)
    key = "transformer.transformer_blocks.0.attn.to_q.lora_A.weight"
    state[key] = torch.zeros(4, 48)  # a wider model's input
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(InputError, match=rf"{path}: key '{key}': LoRA for another base model"):
        model().load_lora(path, "bokeh")


def test_lora_for_a_module_the_transformer_lacks_names_the_key(tmp_path: Path) -> None:
    state = lora_state(tiny_transformer())
    key = "transformer.transformer_blocks.9.attn.to_q.lora_A.weight"
    state[key] = torch.zeros(4, 32)
    state[key.replace("lora_A", "lora_B")] = torch.zeros(32, 4)
    save_file(state, str(tmp_path / "x.safetensors"))
    with pytest.raises(InputError, match=rf"key '{key}'.*no such linear layer"):
        model().load_lora(tmp_path / "x.safetensors", "deblurring")


def test_unknown_adapter_name_is_refused(tmp_path: Path) -> None:
    path = write_tiny_lora(tmp_path / "l.safetensors", tiny_transformer())
    with pytest.raises(InputError, match=r"key 'adapter': unknown GenFocus adapter name"):
        model().load_lora(path, "deblur")


def test_key_of_another_adapter_is_refused(tmp_path: Path) -> None:
    state = {
        k.replace(".weight", ".bokeh.weight"): v for k, v in lora_state(tiny_transformer()).items()
    }
    save_file(state, str(tmp_path / "named.safetensors"))
    with pytest.raises(
        InputError, match=r"LoRA key of another adapter \(expected deblurring, found bokeh\)"
    ):
        model().load_lora(tmp_path / "named.safetensors", "deblurring")


def test_adapter_named_keys_of_the_asked_adapter_load(tmp_path: Path) -> None:
    state = {
        k.replace(".weight", ".bokeh.weight"): v for k, v in lora_state(tiny_transformer()).items()
    }
    save_file(state, str(tmp_path / "named.safetensors"))
    m = model()
    m.load_lora(tmp_path / "named.safetensors", "bokeh")
    assert len(m.adapters["bokeh"]) == len(state) // 2


def test_incomplete_pair_names_the_missing_key(tmp_path: Path) -> None:
    state = lora_state(tiny_transformer())
    del state["transformer.x_embedder.lora_B.weight"]
    save_file(state, str(tmp_path / "half.safetensors"))
    with pytest.raises(InputError, match=r"key 'transformer.x_embedder.lora_B.weight'"):
        model().load_lora(tmp_path / "half.safetensors", "bokeh")


def test_non_peft_key_is_refused(tmp_path: Path) -> None:
    save_file(
        {"lora_unet_x_embedder.lora_down.weight": torch.zeros(4, 64)},
        str(tmp_path / "k.safetensors"),
    )
    with pytest.raises(InputError, match="not a peft-format FLUX transformer LoRA key"):
        model().load_lora(tmp_path / "k.safetensors", "bokeh")


def test_missing_lora_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{tmp_path / 'none.safetensors'}: LoRA file not found"):
        model().load_lora(tmp_path / "none.safetensors", "bokeh")


def test_corrupt_lora_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="unreadable LoRA file"):
        model().load_lora(tmp_path / "bad.safetensors", "bokeh")


def test_nan_lora_weight_is_refused(tmp_path: Path) -> None:
    state = lora_state(tiny_transformer())
    state["transformer.x_embedder.lora_A.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(
        InputError, match=r"key 'transformer\.x_embedder\.lora_A\.weight': LoRA weight has NaN"
    ):
        model().load_lora(tmp_path / "nan.safetensors", "bokeh")
