"""Window, keyframe and cross-fade assembly against an independent transcription of models.md.

The transcription (the ``windows_rule``/``outputs_rule`` fixtures (conftest.py)) works on whole lists like the reference procedure;
the implementation streams. Both must agree on the inputs of every window and the blend weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainset.errors import InputError
from trainset.focus.vda.inference import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    blend_weights,
    model_input_shape,
    output_sources,
    stream_video_depth,
    window_inputs,
)

CPU = torch.device("cpu")


LENGTHS = [1, 5, 22, 23, 31, 32, 33, 40, 44, 45, 54, 66, 100]


@pytest.mark.parametrize("n", LENGTHS)
def test_window_inputs_match_transcription(n: int, windows_rule) -> None:
    assert window_inputs(n) == windows_rule(n)


@pytest.mark.parametrize("n", LENGTHS)
def test_output_weights_match_transcription(n: int, outputs_rule) -> None:
    ours = [{(k, s): w for k, s, w in terms} for terms in output_sources(n)]
    expected = outputs_rule(n)
    assert len(ours) == n
    for frame, (mine, theirs) in enumerate(zip(ours, expected)):
        assert mine.keys() == theirs.keys(), frame
        assert all(mine[key] == pytest.approx(theirs[key], abs=1e-12) for key in theirs), frame


def test_forty_frames_use_two_windows_with_known_inputs() -> None:
    second = window_inputs(40)[1]
    assert len(window_inputs(40)) == 2
    assert second[:4] == [0, 12, 24, 25]
    assert second[10:] == [*range(32, 40), *[39] * 14]


def test_blend_weights_rise_linearly_from_zero_to_one() -> None:
    assert blend_weights() == pytest.approx([0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 1])


@pytest.mark.parametrize(
    ("height", "width", "size", "expected"),
    [
        (48, 64, 56, (56, 70)),  # 64 * 56/48 = 74.7 -> 70
        (1080, 1920, 518, (518, 924)),  # aspect 1.777 <= 1.78: 1920 * 518/1080 = 920.9 -> 924
        (500, 1000, 518, (462, 924)),  # aspect 2: size int(518*1.777/2) = 460 -> 462
        (518, 518, 518, (518, 518)),
        (720, 540, 518, (686, 518)),  # portrait: 720 * 518/540 = 690.7 -> 686
        (100, 103, 56, (56, 56)),  # 103 * 0.56 = 57.7 -> 56
    ],
)
def test_model_input_shape_follows_the_resize_rule(
    height: int, width: int, size: int, expected: tuple[int, int]
) -> None:
    assert model_input_shape(height, width, size) == expected


def test_side_rounding_below_the_size_rounds_up_instead() -> None:
    # size 510 (not a multiple of 14): round(510/14)*14 = 504 < 510, so ceil(510/14)*14 = 518
    assert model_input_shape(100, 100, 510) == (518, 518)


def _constant_clip(n: int, height: int = 20, width: int = 30) -> list[np.ndarray]:
    return [np.full((height, width, 3), 3 * f + 1, dtype=np.uint8) for f in range(n)]


class RecordingPredictor:
    """Decodes which frame sits in each slot; answers depth 1000*window + slot (constant maps)."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[:3] == (1, 32, 3)
        red = x[0, :, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        self.seen.append([(round(v * 255) - 1) // 3 for v in red.tolist()])
        k = len(self.seen) - 1
        values = 1000.0 * k + torch.arange(32, dtype=torch.float32)
        return values.view(32, 1, 1).expand(32, x.shape[-2], x.shape[-1]).clone()


@pytest.mark.parametrize("n", [1, 23, 40, 67])
def test_streaming_sees_the_transcribed_inputs_and_blends_as_transcribed(
    n: int, windows_rule, outputs_rule
) -> None:
    predictor = RecordingPredictor()
    depth = list(stream_video_depth(_constant_clip(n), predictor, 56, CPU))
    assert predictor.seen == windows_rule(n)
    assert len(depth) == n
    for frame, terms in enumerate(outputs_rule(n)):
        expected = sum(w * (1000.0 * k + s) for (k, s), w in terms.items())
        assert depth[frame].shape == (20, 30)
        assert depth[frame].dtype == np.float32
        np.testing.assert_allclose(depth[frame], expected, rtol=1e-6)


def test_streaming_reads_frames_lazily() -> None:
    pulled: list[int] = []

    def frames():
        for f, frame in enumerate(_constant_clip(67)):
            pulled.append(f)
            yield frame

    stream = stream_video_depth(frames(), RecordingPredictor(), 56, CPU)
    for _ in range(24):
        next(stream)
    assert len(pulled) == 32  # one window read, frames 0..23 out


def test_empty_video_gives_no_depth() -> None:
    assert list(stream_video_depth(iter([]), RecordingPredictor(), 56, CPU)) == []


def test_frame_of_another_size_is_refused() -> None:
    clip = _constant_clip(3)
    clip[2] = np.zeros((21, 30, 3), dtype=np.uint8)
    with pytest.raises(
        InputError,
        match=r"frame 2 differs in size from frame 0 \(expected \(20, 30, 3\), found \(21, 30, 3\)\)",
    ):
        list(stream_video_depth(clip, RecordingPredictor(), 56, CPU))


def test_non_rgb_frame_is_refused() -> None:
    with pytest.raises(InputError, match=r"frame 0 is not an RGB uint8 image"):
        list(
            stream_video_depth(
                [np.zeros((20, 30), dtype=np.float32)], RecordingPredictor(), 56, CPU
            )
        )
