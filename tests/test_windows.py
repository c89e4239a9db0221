"""Windows of a whole video and the stitching rule (kernels.windows), on cases whose answer is known by hand."""

import pytest
import torch

from aosa.kernels.windows import frame_weights, stitch, tent_weights, window_starts


@pytest.mark.parametrize(("frames", "clip", "hop", "starts"), [
    (16, 16, 8, [0]),                  # one clip long: one window
    (40, 16, 8, [0, 8, 16, 24]),       # the hops end exactly at the last frame
    (41, 16, 8, [0, 8, 16, 24, 25]),   # they miss it: one more window ends there
    (40, 16, 16, [0, 16, 24]),
    (20, 16, 1, [0, 1, 2, 3, 4]),
])
def test_windows_start_every_hop_and_reach_the_last_frame(frames, clip, hop, starts):
    assert window_starts(frames, clip, hop) == starts


@pytest.mark.parametrize(("frames", "hop", "message"), [
    (15, 8, "has 15 frames, shorter than one clip of 16"),
    (40, 0, "hop 0 must be between 1 and the clip length 16"),
    (40, 17, "hop 17 must be between 1 and the clip length 16"),
])
def test_bad_windows_say_why(frames, hop, message):
    with pytest.raises(ValueError, match=message):
        window_starts(frames, 16, hop)


def test_tent_weights_rise_to_the_middle_and_fall():
    assert tent_weights(4).tolist() == [1, 2, 2, 1]
    assert tent_weights(5).tolist() == [1, 2, 3, 2, 1]


def test_blending_rule_by_hand():
    """clip 4, hop 2, 6 frames: windows at 0 and 2, tents [1, 2, 2, 1]. Frame 2 is the first window's third frame
    (weight 2) and the second's first (weight 1): (2a + b) / 3; frame 3: (a + 2b) / 3; frames 0-1 are a's alone,
    4-5 b's alone."""
    a, b = torch.full((4, 1, 1), 3.0), torch.full((4, 1, 1), 9.0)
    stitched = stitch([a, b], [0, 2], 6).flatten().tolist()
    assert stitched == pytest.approx([3, 3, (2 * 3 + 9) / 3, (3 + 2 * 9) / 3, 9, 9])
    assert frame_weights([0, 2], 4, 6).flatten().tolist() == pytest.approx([1, 1, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])


def test_one_window_is_its_map_exactly():
    window = torch.randn(16, 7, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(stitch([window], [0], 16), window)


def test_windows_that_agree_stitch_to_their_common_map():
    """A static clip's windows all give one map: stitched, every frame is that map (to float rounding)."""
    frame = torch.rand(7, 5, generator=torch.Generator().manual_seed(1))
    window = frame.expand(16, 7, 5)
    starts = window_starts(57, 16, 5)
    stitched = stitch([window] * len(starts), starts, 57)
    torch.testing.assert_close(stitched, frame.expand(57, 7, 5), rtol=1e-6, atol=0)


def test_every_frame_weights_sum_to_one():
    starts = window_starts(83, 16, 6)
    weights = frame_weights(starts, 16, 83)
    total = torch.zeros(83, dtype=torch.float64)
    for start, weight in zip(starts, weights):
        total[start:start + 16] += weight
    torch.testing.assert_close(total, torch.ones(83, dtype=torch.float64))
