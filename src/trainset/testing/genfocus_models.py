"""Tiny random GenFocus models for tests: FLUX transformer, VAE, scheduler, LoRA, prompt cache.

``write_tiny_flux(folder)`` saves them in FLUX.1-dev's diffusers layout (``transformer/``,
``vae/``, ``scheduler/``); ``write_tiny_lora(path, transformer)`` a peft-format LoRA over the
modules GenFocus switches per branch; ``write_prompt(flux_dir, prompt, cache_dir)`` the cached
prompt embeddings (there are no text encoders). All seeded.
"""

from __future__ import annotations

from pathlib import Path

import torch

# From the defining modules, not ``diffusers``: its package ``__init__`` resolves these names, for
# a type checker, to the placeholder classes of ``diffusers.utils.dummy_pt_objects`` (no
# nn.Module). At run time both spellings are the same class.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from safetensors.torch import save_file

from trainset.focus.genfocus.lora import is_switched
from trainset.focus.genfocus.pretrained import prompt_cache_path, write_prompt_cache

TEXT_DIM = 32  # joint_attention_dim (4096 in FLUX.1-dev)
POOLED_DIM = 16  # pooled_projection_dim (768)
TEXT_TOKENS = 7


def tiny_transformer(seed: int = 0, *, layers: int = 1, heads: int = 2) -> FluxTransformer2DModel:
    """A FLUX transformer with ``layers`` double and single blocks, ``heads`` heads of 16
    (~80K weights with the defaults)."""
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=layers,
        num_single_layers=layers,
        attention_head_dim=16,
        num_attention_heads=heads,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=POOLED_DIM,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 4-level AutoencoderKL (factor 8, 16 latent channels, FLUX's shift and scale)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    ).eval()


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's scheduler configuration (dynamic shift 0.5..1.15 over 256..4096 tokens)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def lora_state(
    transformer: torch.nn.Module, *, rank: int = 4, seed: int = 1, switched: bool = True
) -> dict[str, torch.Tensor]:
    """Random peft-format LoRA weights over the switched modules (or, with ``switched=False``,
    over ``context_embedder`` only, a module used by every branch)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if is_switched(name) if switched else name == "context_embedder":
            a = torch.randn(rank, module.in_features, generator=gen) * 0.3
            b = torch.randn(module.out_features, rank, generator=gen) * 0.3
            state[f"transformer.{name}.lora_A.weight"] = a
            state[f"transformer.{name}.lora_B.weight"] = b
    return state


def write_tiny_lora(
    path: Path,
    transformer: torch.nn.Module,
    *,
    metadata: dict[str, str] | None = None,
    rank: int = 4,
    seed: int = 1,
    switched: bool = True,
) -> Path:
    """Save :func:`lora_state` as a ``.safetensors`` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = lora_state(transformer, rank=rank, seed=seed, switched=switched)
    save_file(state, str(path), metadata=metadata)
    return path


def prompt_tensors(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (prompt_embeds (1, 7, 32), pooled (1, 16))."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=gen), torch.randn(
        1, POOLED_DIM, generator=gen
    )


def write_prompt(flux_dir: Path, prompt: str, cache_dir: Path) -> None:
    """Cache random embeddings for ``prompt`` as if FLUX's text encoders had made them."""
    embeds, pooled = prompt_tensors()
    write_prompt_cache(prompt_cache_path(flux_dir, prompt, cache_dir), prompt, embeds, pooled)


def write_tiny_flux(folder: Path, seed: int = 0) -> FluxTransformer2DModel:
    """Save a tiny transformer, VAE and scheduler in diffusers layout; return the transformer."""
    transformer = tiny_transformer(seed)
    transformer.save_pretrained(folder / "transformer")
    tiny_vae(seed).save_pretrained(folder / "vae")
    flux_scheduler().save_pretrained(folder / "scheduler")
    return transformer


PROMPT_WORDS = [
    "a",
    "sharp",
    "photo",
    "with",
    "everything",
    "in",
    "focus",
    "an",
    "excellent",
    "large",
    "aperture",
]  # the vocabulary of both GenFocus prompts


def write_tiny_text_encoders(flux_dir: Path, seed: int = 0) -> None:
    """Tiny CLIP and T5 encoders with word-level tokenizers of the prompts' words, and the
    ``model_index.json`` of FLUX.1-dev, so that diffusers' FluxPipeline loads them."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,  # what "T5TokenizerFast" names in transformers 5 (a run-time alias)
    )

    torch.manual_seed(seed)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in PROMPT_WORDS:
        vocab.setdefault(f"{word}</w>", len(vocab))
    folder = flux_dir / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    clip_tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    clip_tok.model_max_length = 77  # FLUX.1-dev's CLIP length
    clip_tok.save_pretrained(folder)
    clip = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=POOLED_DIM, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=POOLED_DIM,
        bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    CLIPTextModel(clip).save_pretrained(flux_dir / "text_encoder")
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{word}", -1.0) for word in dict.fromkeys(PROMPT_WORDS)]
    unigram = Tokenizer(models.Unigram(pieces, unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    t5_tok = T5Tokenizer(
        tokenizer_object=unigram,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
    )
    t5_tok.model_max_length = 512
    t5_tok.save_pretrained(flux_dir / "tokenizer_2")
    t5 = T5Config(
        vocab_size=len(pieces), d_model=TEXT_DIM, d_ff=64, num_layers=1, num_heads=2, d_kv=16
    )
    T5EncoderModel(t5).save_pretrained(flux_dir / "text_encoder_2")
    index = {
        "_class_name": "FluxPipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (flux_dir / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
