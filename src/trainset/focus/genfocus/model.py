"""GenFocus inference on diffusers' FLUX components (../shared/reference/genfocus.md).

The transformer runs token streams ("branches") ``[text, main latent, condition_1..n]``, each
with its own hidden states through every block. Text and main take the current sigma and the
guidance; every condition takes timestep 0 and guidance 1. Double blocks run text through the
context modules and the other branches through the image modules; single blocks run every branch
through AdaLN-single with its own time embedding. Text and main attend to every branch, a
condition to text, main and itself (the group mask). The velocity is ``norm_out`` + ``proj_out``
of the main branch. With no conditions this is plain FLUX.

LoRA (:mod:`trainset.focus.genfocus.lora`) is applied, never merged: in the modules GenFocus
switches per branch only to condition branches, with scale 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from trainset.errors import InputError
from trainset.focus.genfocus.deps import require_diffusers
from trainset.focus.genfocus.lora import LoraWeights, check_adapter, is_switched, load_lora

require_diffusers()

from diffusers.models.embeddings import apply_rotary_emb  # noqa: E402

# Tiled denoising (official generate): tiles of 32 x 32 packed tokens (512 px), overlap
# 32 // 8 = 4 tokens, Gaussian blend weights exp(-(u^2 + v^2)) with u, v = linspace(-2, 2, 32).
TILE_TOKENS = 32
TILE_STRIDE = TILE_TOKENS - TILE_TOKENS // 8
TILE_SPREAD = 2.0
# One packed token covers 16 x 16 pixels (VAE factor 8, then 2 x 2 packing).
PIXELS_PER_TOKEN = 16

Tensor = torch.Tensor


def image_ids(rows: int, cols: int, delta: Sequence[int] = (0, 0), **kw: Any) -> Tensor:
    """Position ids (rows * cols, 3) of a packed grid: ``(0, row + delta[0], col + delta[1])``."""
    ids = torch.zeros(rows, cols, 3, **kw)
    ids[..., 1] += torch.arange(rows, **kw)[:, None] + delta[0]
    ids[..., 2] += torch.arange(cols, **kw)[None, :] + delta[1]
    return ids.reshape(rows * cols, 3)


def pack_latents(z: Tensor) -> Tensor:
    """VAE latents (B, C, h, w) -> tokens (B, h/2 * w/2, 4C), row-major 2 x 2 patches."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """Tokens (B, H/16 * W/16, 4C) -> VAE latents (B, C, H/8, W/8) for an image of H x W px."""
    b, _, channels = tokens.shape
    rows, cols = height // PIXELS_PER_TOKEN, width // PIXELS_PER_TOKEN
    z = tokens.view(b, rows, cols, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, channels // 4, rows * 2, cols * 2)


def tile_starts(n: int, tile: int = TILE_TOKENS, stride: int = TILE_STRIDE) -> list[int]:
    """Tile origins along an axis of ``n`` tokens: every ``stride``, the last one ending at ``n``."""
    starts = list(range(0, max(1, n - tile + 1), stride))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return starts


def tile_weights(tile: int = TILE_TOKENS, **kw: Any) -> Tensor:
    """Blend weights (tile * tile,) of one tile: ``exp(-(u^2 + v^2))``, u, v in [-2, 2]."""
    u = torch.linspace(-TILE_SPREAD, TILE_SPREAD, tile, **kw)
    return torch.exp(-(u[:, None] ** 2 + u[None, :] ** 2)).flatten()


def dynamic_shift_mu(n_tokens: int, config: Any) -> float:
    """FLUX's resolution-dependent shift ``mu``: linear in the token count, ``base_shift`` at
    ``base_image_seq_len`` tokens and ``max_shift`` at ``max_image_seq_len`` (not clamped)."""
    slope = (config.max_shift - config.base_shift) / (
        config.max_image_seq_len - config.base_image_seq_len
    )
    return float(n_tokens * slope + config.base_shift - slope * config.base_image_seq_len)


def _heads(x: Tensor, head_dim: int) -> Tensor:
    """(B, S, H * D) -> (B, S, H, D)."""
    return x.unflatten(-1, (-1, head_dim))


def _rope(x: Tensor, rope: Any) -> Tensor:
    """diffusers' FLUX RoPE on (B, S, H, D) with a (cos, sin) pair of (S, D)."""
    return cast(Tensor, apply_rotary_emb(x, rope, sequence_dim=1))


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention over (B, S, H, D) tensors, output (B, S, H * D) in q's dtype."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2, 3).to(q.dtype)


def _clip16(h: Tensor) -> Tensor:
    return h.clip(-65504, 65504) if h.dtype == torch.float16 else h


class GenFocusModel:
    """FLUX transformer + VAE + flow-matching scheduler with GenFocus condition branches.

    ``transformer``: diffusers ``FluxTransformer2DModel``; ``vae``: ``AutoencoderKL``;
    ``scheduler``: ``FlowMatchEulerDiscreteScheduler``. Latents are packed tokens (B, N, 64).
    """

    def __init__(self, transformer: Any, vae: Any, scheduler: Any) -> None:
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.adapters: dict[str, dict[str, LoraWeights]] = {}
        self.active_adapter: str | None = None
        self._modules = dict(self.transformer.named_modules())
        self._hooks: dict[str, list[Any]] = {}
        self._switched_now: dict[torch.nn.Module, LoraWeights] = {}

    # ------------------------------------------------------------------ LoRA

    @property
    def device(self) -> torch.device:
        """Device of the transformer."""
        return self.transformer.x_embedder.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the transformer."""
        return self.transformer.x_embedder.weight.dtype

    def load_lora(
        self,
        source: str | os.PathLike[str] | Mapping[str, Tensor],
        adapter: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Load a peft-format LoRA (file or state dict) as ``adapter`` and make it active.

        InputError names the file and key of a LoRA for another base model or adapter.
        """
        check_adapter(adapter, file=None if isinstance(source, Mapping) else source)
        weights = load_lora(source, adapter, self.transformer, metadata=metadata)
        self.adapters[adapter] = {
            name: LoraWeights(
                w.down.to(self.device, self.dtype), w.up.to(self.device, self.dtype), w.scale
            )
            for name, w in weights.items()
        }
        for handle in self._hooks.pop(adapter, []):  # reloading an adapter replaces it
            handle.remove()
        self._hooks[adapter] = [
            self._modules[name].register_forward_hook(self._shared_hook(adapter, name))
            for name in weights
            if not is_switched(name)
        ]
        self.active_adapter = adapter

    def _shared_hook(self, adapter: str, name: str) -> Callable[..., Tensor | None]:
        """Forward hook adding a non-switched module's delta on every branch (peft's way)."""

        def hook(module: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
            if self.active_adapter != adapter:
                return None
            w = self.adapters[adapter][name]
            return out + w.scale * F.linear(F.linear(args[0], w.down), w.up)

        return hook

    def _lin(self, module: torch.nn.Module, x: Tensor, cond: bool) -> Tensor:
        """``module(x)`` plus, on a condition branch, the active adapter's switched delta."""
        out = module(x)
        if cond and self.active_adapter is not None:
            w = self._switched_now.get(module)
            if w is not None:
                out = out + F.linear(F.linear(x, w.down), w.up)
        return out

    # ------------------------------------------------------------------ transformer

    def velocity(
        self,
        latents: Tensor,
        cond_tokens: Sequence[Tensor],
        prompt_embeds: Tensor,
        pooled_prompt_embeds: Tensor,
        sigma: float | Tensor,
        guidance: float,
        *,
        grid: tuple[int, int] | None = None,
        cond_deltas: Sequence[Sequence[int]] | None = None,
    ) -> Tensor:
        """Velocity (B, N, 64) of the main branch.

        ``latents`` (B, N, 64) on a packed grid ``grid`` = (rows, cols) (default square);
        ``cond_tokens``: condition tokens (B or 1, N, 64) on the same grid, position ids shifted by
        ``cond_deltas`` (default (0, 0)); ``prompt_embeds`` (1 or B, T, 4096),
        ``pooled_prompt_embeds`` (1 or B, 768); ``sigma`` in [0, 1]; ``guidance`` (FLUX.1-dev's
        distilled guidance; ignored by a transformer without guidance embeddings).
        """
        n = latents.shape[1]
        rows, cols = grid if grid is not None else (round(n**0.5), round(n**0.5))
        if rows * cols != n:
            raise InputError("latent grid", key="grid", expected=f"rows * cols = {n}", found=grid)
        deltas = list(cond_deltas) if cond_deltas is not None else [(0, 0)] * len(cond_tokens)
        if len(deltas) != len(cond_tokens):
            raise InputError(
                "one position delta per condition",
                key="cond_deltas",
                expected=len(cond_tokens),
                found=len(deltas),
            )
        kw: dict[str, Any] = {"device": latents.device, "dtype": latents.dtype}
        return self._forward(
            latents,
            list(cond_tokens),
            prompt_embeds,
            pooled_prompt_embeds,
            sigma,
            guidance,
            image_ids(rows, cols, **kw),
            [image_ids(rows, cols, d, **kw) for d in deltas],
        )

    @property
    def _switched(self) -> dict[torch.nn.Module, LoraWeights]:
        weights = self.adapters.get(self.active_adapter or "", {})
        return {self._modules[n]: w for n, w in weights.items() if is_switched(n)}

    def _temb(self, t: Tensor, g: Tensor, pooled: Tensor) -> Tensor:
        tr = self.transformer
        if tr.config.guidance_embeds:
            return tr.time_text_embed(t, g, pooled)
        return tr.time_text_embed(t, pooled)

    def _forward(
        self,
        x: Tensor,
        conds: list[Tensor],
        prompt_embeds: Tensor,
        pooled: Tensor,
        sigma: float | Tensor,
        guidance: float,
        ids_main: Tensor,
        ids_conds: list[Tensor],
    ) -> Tensor:
        tr = self.transformer
        batch = x.shape[0]
        for c in conds:
            if c.shape[1:] != x.shape[1:]:
                raise InputError(
                    "condition tokens on another grid than the latents",
                    key="cond_tokens",
                    expected=tuple(x.shape[1:]),
                    found=tuple(c.shape[1:]),
                )
        conds = [c.expand(batch, -1, -1) for c in conds]
        prompt_embeds = prompt_embeds.expand(batch, -1, -1)
        pooled = pooled.expand(batch, -1)
        self._switched_now = self._switched
        hs = [self._lin(tr.x_embedder, x, False)] + [
            self._lin(tr.x_embedder, c, True) for c in conds
        ]
        dtype = hs[0].dtype
        sig = torch.as_tensor(sigma, device=x.device).to(torch.float32).expand(batch)
        t_main = sig.to(dtype) * 1000
        g_main = torch.full((batch,), float(guidance), device=x.device).to(dtype) * 1000
        temb_main = self._temb(t_main, g_main, pooled)
        temb_cond = self._temb(torch.zeros_like(t_main), torch.ones_like(g_main) * 1000, pooled)
        txt = tr.context_embedder(prompt_embeds)
        txt_ids = torch.zeros(prompt_embeds.shape[1], 3, device=x.device, dtype=ids_main.dtype)
        ropes = [tr.pos_embed(i) for i in (txt_ids, ids_main, *ids_conds)]
        flags = [False] + [True] * len(conds)  # per image branch: is it a condition
        tembs = [temb_main] + [temb_cond] * len(conds)

        for block in tr.transformer_blocks:
            txt, hs = self._double_block(block, txt, hs, temb_main, tembs, flags, ropes)
        branches = [txt, *hs]
        for block in tr.single_transformer_blocks:
            branches = self._single_block(
                block, branches, [temb_main, *tembs], [False, *flags], ropes
            )
        out = tr.norm_out(branches[1], temb_main)
        return tr.proj_out(out)

    def _ada_norm(self, norm: Any, h: Tensor, temb: Tensor, cond: bool) -> list[Tensor]:
        """AdaLayerNormZero / ...Single with LoRA on ``norm.linear``: the normalised, modulated
        hidden states followed by the remaining modulation chunks (gates, MLP shift/scale)."""
        emb = self._lin(norm.linear, norm.silu(temb), cond)
        chunks = emb.chunk(emb.shape[1] // h.shape[-1], dim=1)
        shift, scale = chunks[0], chunks[1]
        return [norm.norm(h) * (1 + scale[:, None]) + shift[:, None], *chunks[2:]]

    def _attend(
        self, qs: list[Tensor], ks: list[Tensor], vs: list[Tensor], ropes: list[Any]
    ) -> list[Tensor]:
        """Attention under the group mask; branch 0 is text, 1 main, 2.. conditions.

        Text and main query every branch (one joint call, as plain FLUX); a condition queries
        text, main and itself. Inputs (B, S, H, D) before RoPE; outputs (B, S, H * D).
        """
        qs = [_rope(q, r) for q, r in zip(qs, ropes)]
        ks = [_rope(k, r) for k, r in zip(ks, ropes)]
        joint = _sdpa(torch.cat(qs[:2], 1), torch.cat(ks, 1), torch.cat(vs, 1))
        outs = list(joint.split([qs[0].shape[1], qs[1].shape[1]], dim=1))
        for i in range(2, len(qs)):
            outs.append(
                _sdpa(qs[i], torch.cat([*ks[:2], ks[i]], 1), torch.cat([*vs[:2], vs[i]], 1))
            )
        return outs

    def _qkv(self, attn: Any, h: Tensor, cond: bool) -> tuple[Tensor, Tensor, Tensor]:
        d = attn.head_dim
        q = attn.norm_q(_heads(self._lin(attn.to_q, h, cond), d))
        k = attn.norm_k(_heads(self._lin(attn.to_k, h, cond), d))
        v = _heads(self._lin(attn.to_v, h, cond), d)
        return q, k, v

    def _double_block(
        self,
        block: Any,
        txt: Tensor,
        hs: list[Tensor],
        temb_txt: Tensor,
        tembs: list[Tensor],
        flags: list[bool],
        ropes: list[Any],
    ) -> tuple[Tensor, list[Tensor]]:
        attn = block.attn
        n_txt, gate_t, shift2_t, scale2_t, gate2_t = block.norm1_context(txt, emb=temb_txt)
        mods = [self._ada_norm(block.norm1, h, t, c) for h, t, c in zip(hs, tembs, flags)]
        d = attn.head_dim
        q_t = attn.norm_added_q(_heads(attn.add_q_proj(n_txt), d))
        k_t = attn.norm_added_k(_heads(attn.add_k_proj(n_txt), d))
        v_t = _heads(attn.add_v_proj(n_txt), d)
        qkv = [self._qkv(attn, m[0], c) for m, c in zip(mods, flags)]
        outs = self._attend(
            [q_t, *(x[0] for x in qkv)], [k_t, *(x[1] for x in qkv)], [v_t, *(x[2] for x in qkv)],
            ropes,
        )  # fmt: skip
        txt = txt + gate_t.unsqueeze(1) * attn.to_add_out(outs[0])
        normed = block.norm2_context(txt) * (1 + scale2_t[:, None]) + shift2_t[:, None]
        txt = _clip16(txt + gate2_t.unsqueeze(1) * block.ff_context(normed))
        new = []
        for h, m, o, cond in zip(hs, mods, outs[1:], flags):
            _, gate, shift2, scale2, gate2 = m
            o = attn.to_out[1](self._lin(attn.to_out[0], o, cond))
            h = h + gate.unsqueeze(1) * o
            normed = block.norm2(h) * (1 + scale2[:, None]) + shift2[:, None]
            ff = block.ff.net
            f = self._lin(ff[2], ff[1](ff[0](normed)), cond)
            for extra in ff[3:]:
                f = extra(f)
            new.append(_clip16(h + gate2.unsqueeze(1) * f))
        return txt, new

    def _single_block(
        self,
        block: Any,
        hs: list[Tensor],
        tembs: list[Tensor],
        flags: list[bool],
        ropes: list[Any],
    ) -> list[Tensor]:
        normed, gates, mlps, qkv = [], [], [], []
        for h, t, cond in zip(hs, tembs, flags):
            n, gate = self._ada_norm(block.norm, h, t, cond)
            normed.append(n)
            gates.append(gate)
            mlps.append(block.act_mlp(self._lin(block.proj_mlp, n, cond)))
            qkv.append(self._qkv(block.attn, n, cond))
        outs = self._attend([x[0] for x in qkv], [x[1] for x in qkv], [x[2] for x in qkv], ropes)
        return [
            _clip16(h + gate.unsqueeze(1) * self._lin(block.proj_out, torch.cat([o, m], 2), cond))
            for h, gate, o, m, cond in zip(hs, gates, outs, mlps, flags)
        ]

    # ------------------------------------------------------------------ sampling

    def tiled_velocity(
        self,
        latents: Tensor,
        cond_tokens: Sequence[Tensor],
        prompt_embeds: Tensor,
        pooled_prompt_embeds: Tensor,
        sigma: float | Tensor,
        guidance: float,
        *,
        grid: tuple[int, int],
    ) -> Tensor:
        """Velocity from 32 x 32-token tiles (stride 28, last tile at the end of each axis),
        each with tile-local position ids on every branch, blended with Gaussian weights."""
        rows, cols = grid
        index = torch.arange(rows * cols, device=latents.device).view(rows, cols)
        weights = tile_weights(device=latents.device, dtype=latents.dtype)
        local = image_ids(TILE_TOKENS, TILE_TOKENS, device=latents.device, dtype=latents.dtype)
        total = torch.zeros_like(latents)
        norm = torch.zeros(latents.shape[:2], device=latents.device, dtype=latents.dtype)
        for c0 in tile_starts(cols):  # the official loop order (meshgrid, width outer)
            for r0 in tile_starts(rows):
                sel = index[r0 : r0 + TILE_TOKENS, c0 : c0 + TILE_TOKENS].flatten()
                v = self._forward(
                    latents[:, sel],
                    [c[:, sel] for c in cond_tokens],
                    prompt_embeds,
                    pooled_prompt_embeds,
                    sigma,
                    guidance,
                    local,
                    [local] * len(cond_tokens),
                )
                total[:, sel] += v * weights[None, :, None]
                norm[:, sel] += weights
        return total / norm.unsqueeze(-1)

    def denoise(
        self,
        init_latents: Tensor,
        cond_tokens: Sequence[Tensor],
        prompt_embeds: Tensor,
        pooled_prompt_embeds: Tensor,
        *,
        height: int,
        width: int,
        steps: int,
        guidance: float,
        tiled: bool | None = None,
        cond_deltas: Sequence[Sequence[int]] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Euler flow matching from ``init_latents`` (B, N, 64) noise to clean latents.

        ``sigmas = linspace(1, 1/steps, steps)`` shifted by FLUX's dynamic shift for N tokens;
        no classifier-free guidance pass. ``tiled=None``: tiles when both sides of the packed
        grid are >= 32 tokens (>= 512 px). ``progress(step)`` after each step.
        """
        if height % PIXELS_PER_TOKEN or width % PIXELS_PER_TOKEN:
            raise InputError(
                "image size must be a multiple of 16",
                expected="H, W % 16 == 0",
                found=(height, width),
            )
        if steps < 1:
            raise InputError("steps must be positive", key="steps", expected=">= 1", found=steps)
        grid = (height // PIXELS_PER_TOKEN, width // PIXELS_PER_TOKEN)
        n = grid[0] * grid[1]
        if init_latents.shape[1] != n:
            raise InputError(
                "latent tokens do not match the image size",
                expected=n,
                found=init_latents.shape[1],
            )
        can_tile = min(grid) >= TILE_TOKENS
        if tiled and not can_tile:
            raise InputError(
                "tiled denoising needs both sides >= 512 px", key="tiled", found=(height, width)
            )
        use_tiles = can_tile if tiled is None else bool(tiled)
        mu = dynamic_shift_mu(n, self.scheduler.config)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        self.scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=init_latents.device)
        latents = init_latents
        with torch.no_grad():
            for step, t in enumerate(self.scheduler.timesteps):
                sigma = t.expand(latents.shape[0]).to(latents.dtype) / 1000
                args = (latents, cond_tokens, prompt_embeds, pooled_prompt_embeds, sigma, guidance)
                if use_tiles:
                    v = self.tiled_velocity(*args, grid=grid)
                else:
                    v = self.velocity(*args, grid=grid, cond_deltas=cond_deltas)
                latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
                if progress is not None:
                    progress(step)
        return latents

    # ------------------------------------------------------------------ VAE

    def _vae_factors(self) -> tuple[float, float]:
        cfg = self.vae.config
        return float(cfg.scaling_factor), float(cfg.shift_factor or 0.0)

    def encode_condition(self, x: Tensor, eps: Tensor | None = None) -> Tensor:
        """Condition tokens (B, H/16 * W/16, 64) of an image batch (B, 3, H, W).

        ``x`` goes into the VAE as given: an RGB image in [-1, 1], a defocus map in [0, 1].
        Latent = a posterior sample ``mean + std * eps`` (``eps`` (B, C, H/8, W/8); None: drawn
        from torch's global generator), then ``(z - shift) * scale`` and 2 x 2 packing.
        """
        scale, shift = self._vae_factors()
        with torch.no_grad():
            dist = self.vae.encode(x.to(self.vae.device, self.vae.dtype)).latent_dist
            if eps is None:
                z = dist.sample()
            else:
                z = dist.mean + dist.std * eps.to(dist.mean.device, dist.mean.dtype)
            return pack_latents((z - shift) * scale).to(self.dtype)

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] from latent tokens (B, N, 64)."""
        scale, shift = self._vae_factors()
        with torch.no_grad():
            z = unpack_latents(latents, height, width) / scale + shift
            image = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> GenFocusModel:
        """Move transformer, VAE and loaded LoRA weights (and cast them to ``dtype``)."""
        self.transformer.to(device, dtype)
        self.vae.to(device, dtype)
        for weights in self.adapters.values():
            for name, w in list(weights.items()):
                weights[name] = LoraWeights(
                    w.down.to(device, dtype or w.down.dtype),
                    w.up.to(device, dtype or w.up.dtype),
                    w.scale,
                )
        return self
