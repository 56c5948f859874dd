"""Exact thin-lens defocus of scenes whose full content is known: the renderers' ground truth.

A scene is a stack of planes in linear HDR light, each with an analytic band-limited texture
(a sum of cosines: exact at any position), an extent (union of discs and boxes, or everywhere)
and an inverse depth that is affine in the image (every 3-D plane is: fronto-parallel planes
have a constant one). Content hidden behind nearer planes is part of the scene.

Thin lens, focus distance S, aperture radius A = f / (2 N): the ray that reaches pixel x through
the lens point A * q (q in the unit disc) meets the plane of depth d at the position that the
central pinhole sees at pixel ``x + K_r * q * (1/d - 1/S)``, with
``K_r = f^2 S W / (2 N (S - f) sensor_width)`` px m: half the thin-lens CoC diameter factor of
:func:`trainset.focus.optics.signed_coc_px` (``coc_model="thin_lens"``). For a plane with
``1/d = a + b . x'`` the position x' solves a 2x2 linear system in closed form. The defocused
image is the average over the aperture disc of these pinhole views, each resolved by depth
(nearest plane wins): :func:`thin_lens_image`. The pinhole view itself (q = 0) with its depth
map is what a single RGB-D renderer gets: :func:`pinhole_view`.

Aperture samples lie on a golden-angle (Vogel) spiral, uniform in area; two spirals of
``n_samples`` rotated against each other give two independent estimates whose difference bounds
the truth's own convergence error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from trainset.errors import InputError

# Golden angle, radians: successive spiral samples turn by it (Vogel's sunflower spiral).
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
# Pixels evaluated per block of aperture samples (bounds memory: about 40 bytes per entry).
_BLOCK_ENTRIES = 2_000_000


@dataclass(frozen=True)
class Lens:
    """Thin lens: focal length ``f_m`` and focus distance ``s_focus_m`` in metres, f-number
    ``n``, sensor width ``sensor_width_m`` in metres."""

    f_m: float
    n: float
    s_focus_m: float
    sensor_width_m: float = 0.036

    def radius_scale_px(self, width_px: int) -> float:
        """``K_r`` (px m): CoC radius in pixels is ``K_r * |1/d - 1/S|``."""
        if self.s_focus_m <= self.f_m:
            raise InputError(
                "focus distance must exceed the focal length",
                key="s_focus_m",
                expected=f"> {self.f_m}",
                found=self.s_focus_m,
            )
        return (
            self.f_m**2
            * self.s_focus_m
            * width_px
            / (2.0 * self.n * (self.s_focus_m - self.f_m) * self.sensor_width_m)
        )


@dataclass(frozen=True)
class Texture:
    """Linear RGB ``base + sum_j amps[j] * cos(2 pi freqs[j] . (x, y) + phases[j])`` at pixel
    positions (x right, y down, pixel centres at integers). ``freqs`` (J, 2) cycles/px,
    ``phases`` (J,), ``amps`` (J, 3), ``base`` (3,)."""

    base: tuple[float, float, float]
    freqs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    phases: np.ndarray = field(default_factory=lambda: np.zeros(0))
    amps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def at(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Colour (3, *x.shape) at positions ``x``, ``y`` (same shape), float32."""
        out = torch.empty((3, *x.shape), dtype=torch.float32, device=x.device)
        for c in range(3):
            out[c] = self.base[c]
        for j in range(len(self.phases)):
            wave = torch.cos(
                (2 * math.pi * float(self.freqs[j, 0])) * x
                + (2 * math.pi * float(self.freqs[j, 1])) * y
                + float(self.phases[j])
            )
            for c in range(3):
                if self.amps[j, c]:
                    out[c].add_(wave, alpha=float(self.amps[j, c]))
        return out


def random_texture(
    seed: int,
    mean: tuple[float, float, float],
    contrast: float,
    *,
    n_waves: int = 24,
    max_freq: float = 0.25,
    min_freq: float = 0.01,
) -> Texture:
    """A seeded random texture: ``n_waves`` cosines with log-uniform spatial frequencies in
    ``[min_freq, max_freq]`` cycles/px, random directions and phases, amplitudes falling as
    1/frequency (natural images), each wave's colour a random mix around ``mean``. The
    amplitudes sum to ``contrast`` per channel, so values stay in ``mean +- contrast``."""
    rng = np.random.default_rng(seed)
    freq = np.exp(rng.uniform(np.log(min_freq), np.log(max_freq), n_waves))
    angle = rng.uniform(0.0, np.pi, n_waves)
    freqs = np.stack([freq * np.cos(angle), freq * np.sin(angle)], axis=1)
    weight = (1.0 / freq)[:, None] * rng.uniform(0.3, 1.0, (n_waves, 3))
    amps = contrast * weight / weight.sum(axis=0, keepdims=True)
    return Texture(
        base=(float(mean[0]), float(mean[1]), float(mean[2])),
        freqs=freqs,
        phases=rng.uniform(0.0, 2 * np.pi, n_waves),
        amps=amps,
    )


@dataclass(frozen=True)
class Extent:
    """Where a plane exists, in central-view pixels: the union of ``discs`` (cx, cy, r) and
    ``boxes`` (x0, y0, x1, y1); ``everywhere`` covers the whole infinite plane."""

    discs: tuple[tuple[float, ...], ...] = ()
    boxes: tuple[tuple[float, ...], ...] = ()
    everywhere: bool = False

    def contains(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bool tensor of ``x.shape``: inside the extent."""
        if self.everywhere:
            return torch.ones_like(x, dtype=torch.bool)
        inside = torch.zeros_like(x, dtype=torch.bool)
        for cx, cy, r in self.discs:
            inside |= (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        for x0, y0, x1, y1 in self.boxes:
            inside |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        return inside


@dataclass(frozen=True)
class Plane:
    """A textured plane: inverse depth ``inv_depth[0] + inv_depth[1] * x + inv_depth[2] * y``
    (1/m, x and y in central-view pixels), its ``texture`` (linear, may exceed 1: a light) and
    ``extent``; ``light`` marks light sources (their bokeh discs form the highlight region)."""

    inv_depth: tuple[float, float, float]
    texture: Texture
    extent: Extent
    light: bool = False

    @property
    def fronto_parallel(self) -> bool:
        return self.inv_depth[1] == 0.0 and self.inv_depth[2] == 0.0


@dataclass(frozen=True)
class Scene:
    """Planes seen by a thin lens onto a ``height`` x ``width`` pixel sensor."""

    name: str
    height: int
    width: int
    planes: tuple[Plane, ...]
    lens: Lens


def aperture_samples(n_samples: int, rotation: float = 0.0) -> np.ndarray:
    """(n, 2) points of the unit disc on a golden-angle spiral, uniform in area, turned by
    ``rotation`` radians."""
    if n_samples < 1:
        raise InputError("need aperture samples", key="n_samples", expected=">= 1", found=n_samples)
    i = np.arange(n_samples, dtype=np.float64)
    radius = np.sqrt((i + 0.5) / n_samples)
    theta = i * GOLDEN_ANGLE + rotation
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)


@dataclass(frozen=True)
class View:
    """Pinhole views of a block of aperture samples: linear colour (3, B, H, W), inverse depth
    (B, H, W) of the visible plane and whether it is a light (B, H, W) bool."""

    colour: torch.Tensor
    inv_depth: torch.Tensor
    light: torch.Tensor


def _plane_positions(
    plane: Plane, x: torch.Tensor, y: torch.Tensor, shift: torch.Tensor, inv_focus: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Central-view positions (x', y') where the rays of ``shift`` (B, 2) = K_r * q meet
    ``plane``, and the inverse depth there; all (B, H, W)."""
    a, bx, by = plane.inv_depth
    sx = shift[:, 0, None, None]
    sy = shift[:, 1, None, None]
    # x' = x + s (a + b.x' - 1/S): with y = x + s (a - 1/S), x' = y + s (b.y) / (1 - b.s).
    base_x = x + sx * (a - inv_focus)
    base_y = y + sy * (a - inv_focus)
    if plane.fronto_parallel:
        return base_x, base_y, torch.full_like(base_x, a)
    slope = (bx * base_x + by * base_y) / (1.0 - (bx * sx + by * sy))
    px = base_x + sx * slope
    py = base_y + sy * slope
    return px, py, a + bx * px + by * py


def render_views(scene: Scene, samples: np.ndarray) -> View:
    """Pinhole views of ``scene`` from the aperture points ``samples`` (B, 2) (unit disc)."""
    k_r = scene.lens.radius_scale_px(scene.width)
    inv_focus = 1.0 / scene.lens.s_focus_m
    shift = torch.as_tensor(samples * k_r, dtype=torch.float32)
    ys, xs = torch.meshgrid(
        torch.arange(scene.height, dtype=torch.float32),
        torch.arange(scene.width, dtype=torch.float32),
        indexing="ij",
    )
    shape = (shift.shape[0], scene.height, scene.width)
    best = torch.full(shape, -math.inf)
    owner = torch.full(shape, -1, dtype=torch.int64)
    positions = []
    for index, plane in enumerate(scene.planes):
        px, py, inv = _plane_positions(plane, xs, ys, shift, inv_focus)
        nearer = plane.extent.contains(px, py) & (inv > best)
        best = torch.where(nearer, inv, best)
        owner = torch.where(nearer, index, owner)
        positions.append((px, py))
    if bool((owner < 0).any()):
        raise InputError(
            "scene leaves pixels empty",
            key=scene.name,
            expected="a plane behind every pixel",
            found=int((owner < 0).sum()),
        )
    colour = torch.zeros((3, *shape), dtype=torch.float32)
    light = torch.zeros(shape, dtype=torch.bool)
    for index, plane in enumerate(scene.planes):
        hit = owner == index
        if not bool(hit.any()):
            continue
        px, py = positions[index]
        colour[:, hit] = plane.texture.at(px[hit], py[hit])
        if plane.light:
            light |= hit
    return View(colour, best, light)


def pinhole_view(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a single RGB-D camera records at the lens centre: linear HDR colour (H, W, 3)
    float32, depth (H, W) float32 in metres, and the light-source pixels (H, W) bool."""
    view = render_views(scene, np.zeros((1, 2)))
    colour = view.colour[:, 0].permute(1, 2, 0).numpy()
    depth = (1.0 / view.inv_depth[0]).numpy().astype(np.float32)
    return colour, depth, view.light[0].numpy()


def thin_lens_image(
    scene: Scene, n_samples: int, rotation: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The defocused image: mean of the pinhole views over ``n_samples`` aperture points.

    Returns linear HDR colour (H, W, 3) float32 and the fraction of aperture samples that see a
    light source (H, W) float32 (> 0 inside the lights' bokeh discs).
    """
    samples = aperture_samples(n_samples, rotation)
    block = max(1, _BLOCK_ENTRIES // (scene.height * scene.width))
    total = torch.zeros((3, scene.height, scene.width), dtype=torch.float64)
    lights = torch.zeros((scene.height, scene.width), dtype=torch.float64)
    for start in range(0, n_samples, block):
        view = render_views(scene, samples[start : start + block])
        total += view.colour.sum(dim=1, dtype=torch.float64)
        lights += view.light.sum(dim=0, dtype=torch.float64)
    colour = (total / n_samples).permute(1, 2, 0).numpy().astype(np.float32)
    return colour, (lights / n_samples).numpy().astype(np.float32)


def _fronto(depth_m: float, texture: Texture, extent: Extent, *, light: bool = False) -> Plane:
    return Plane((1.0 / depth_m, 0.0, 0.0), texture, extent, light)


class _Layout:
    """Lengths and textures given for a 256-px frame, scaled to ``size`` px: scenes keep
    their look (geometry and cycles per frame) at every size."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.scale = size / 256.0

    def px(self, *values: float) -> tuple[float, ...]:
        return tuple(v * self.scale for v in values)

    def texture(self, seed: int, mean: tuple[float, float, float], contrast: float) -> Texture:
        return random_texture(
            seed, mean, contrast, max_freq=0.25 / self.scale, min_freq=0.01 / self.scale
        )


def _textured_planes(size: int, focus_m: float, name: str) -> Scene:
    """A background wall at 10 m; a disc and a box at 3 m; a disc and a post at 1 m."""
    lay = _Layout(size)
    wall = lay.texture(11, (0.18, 0.32, 0.45), 0.16)
    middle = lay.texture(12, (0.45, 0.38, 0.12), 0.2)
    near = lay.texture(13, (0.55, 0.12, 0.1), 0.2)
    middle_extent = Extent(discs=(lay.px(196, 70, 38),), boxes=(lay.px(130, 130, 240, 215),))
    near_extent = Extent(discs=(lay.px(70, 150, 44),), boxes=(lay.px(40, -10, 72, 100),))
    planes = (
        _fronto(10.0, wall, Extent(everywhere=True)),
        _fronto(3.0, middle, middle_extent),
        _fronto(1.0, near, near_extent),
    )
    return Scene(name, size, size, planes, Lens(f_m=0.085, n=2.0, s_focus_m=focus_m))


def _slanted(size: int) -> Scene:
    """A floor receding from 0.8 m (bottom edge) to 12 m (top row), a pale post at 2 m standing
    in it (with near-white spots) and a disc at 0.6 m in front; focus 3 m."""
    lay = _Layout(size)
    top, bottom = 1.0 / 12.0, 1.0 / 0.8
    floor = Plane(
        (top, 0.0, (bottom - top) / size),
        lay.texture(21, (0.3, 0.4, 0.25), 0.22),
        Extent(everywhere=True),
    )
    post = lay.texture(22, (0.9, 0.8, 0.6), 0.14)
    ball = lay.texture(23, (0.15, 0.2, 0.6), 0.12)
    planes = (
        floor,
        _fronto(2.0, post, Extent(boxes=(lay.px(150, -20, 185, 160),))),
        _fronto(0.6, ball, Extent(discs=(lay.px(60, 200, 30),))),
    )
    return Scene("slanted", size, size, planes, Lens(f_m=0.085, n=2.0, s_focus_m=3.0))


# Light sources of the lights scene: (linear gain over white, tint) of each group.
_LIGHT_GROUPS = ((4.0, (1.0, 0.85, 0.6)), (12.0, (1.0, 0.75, 0.45)), (40.0, (1.0, 0.9, 0.8)))


def _lights(size: int) -> Scene:
    """Small HDR lights (4, 12 and 40 times white) at 8 m and 4 m before a dark wall at 20 m,
    seen past a leaf-like disc in focus at 1.5 m."""
    lay = _Layout(size)
    planes = [_fronto(20.0, lay.texture(32, (0.02, 0.025, 0.04), 0.015), Extent(everywhere=True))]
    for depth_m, per_group, seed in ((8.0, 5, 34), (4.0, 2, 35)):
        rng = np.random.default_rng(seed)
        for gain, tint in _LIGHT_GROUPS:
            discs = tuple(
                lay.px(*rng.uniform(0, 256, 2), rng.uniform(1.2, 2.5)) for _ in range(per_group)
            )
            colour = Texture(base=(gain * tint[0], gain * tint[1], gain * tint[2]))
            planes.append(_fronto(depth_m, colour, Extent(discs=discs), light=True))
    leaf = lay.texture(33, (0.2, 0.45, 0.12), 0.15)
    planes.append(_fronto(1.5, leaf, Extent(discs=(lay.px(200, 190, 50),))))
    return Scene("lights", size, size, tuple(planes), Lens(f_m=0.085, n=1.4, s_focus_m=1.5))


def quality_scenes(size: int = 256) -> list[Scene]:
    """The benchmark's scenes at ``size`` x ``size`` (geometry and textures scale with it):
    three fronto-parallel textured planes focused far, near and between; a slanted floor with
    occluders; small HDR lights on a dark background."""
    return [
        _textured_planes(size, 10.0, "planes_focus_far"),
        _textured_planes(size, 1.0, "planes_focus_near"),
        _textured_planes(size, 3.0, "planes_focus_mid"),
        _slanted(size),
        _lights(size),
    ]
