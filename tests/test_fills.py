"""Fill values: constants in normalized space, blur, and conditional sampling statistics."""

import torch

from aosa.kernels.filters import blur_frames, neighbourhood_stats
from aosa.kernels.fills import make_fill
from aosa.kernels.space import InputSpace


def brute_force_stats(clip: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    channels, frames, height, width = clip.shape
    mean, std = torch.zeros_like(clip), torch.zeros_like(clip)
    for y in range(height):
        for x in range(width):
            values = [clip[:, :, y + dy, x + dx]
                      for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                      if (dy or dx) and 0 <= y + dy < height and 0 <= x + dx < width]
            stacked = torch.stack(values)
            mean[:, :, y, x] = stacked.mean(0)
            std[:, :, y, x] = stacked.std(0, unbiased=False)
    return mean, std


def test_neighbourhood_stats_match_brute_force():
    clip = torch.rand(3, 2, 11, 9, dtype=torch.float64)
    mean, std = neighbourhood_stats(clip, radius=2)
    ref_mean, ref_std = brute_force_stats(clip, radius=2)
    assert torch.allclose(mean, ref_mean)
    assert torch.allclose(std, ref_std, atol=1e-6)


def test_constant_fills_in_normalized_space():
    space = InputSpace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    clip = torch.randn(3, 4, 8, 8)
    assert torch.equal(make_fill("mean", clip, space).expected, torch.zeros(3, 1, 1, 1))
    black = make_fill("zero", clip, space).expected.flatten()
    assert torch.allclose(black, torch.tensor([-2.5, -1.6, -0.6]))
    blurred = make_fill("blur", clip, space).expected
    assert blurred.shape == clip.shape and blurred.std() < clip.std()


def test_blur_is_per_frame():
    clip = torch.zeros(1, 3, 21, 21)
    clip[0, 1, 10, 10] = 1.0
    blurred = blur_frames(clip)
    assert blurred[0, 0].abs().max() == 0 and blurred[0, 2].abs().max() == 0
    assert torch.isclose(blurred[0, 1].sum(), torch.tensor(1.0), atol=1e-5)


def test_conditional_draws_are_seeded_and_centred_on_the_mean():
    clip = torch.rand(3, 2, 16, 16)
    first = make_fill("conditional", clip, InputSpace(), samples=3, seed=7)
    again = make_fill("conditional", clip, InputSpace(), samples=3, seed=7)
    assert len(first.draws) == 3
    assert all(torch.equal(a, b) for a, b in zip(first.draws, again.draws))
    assert not torch.equal(first.draws[0], first.draws[1])
    many = make_fill("conditional", clip, InputSpace(), samples=400, seed=1)
    draws = torch.stack(many.draws)
    _, std = neighbourhood_stats(clip, radius=4)
    standard_error = std / 20  # sqrt(400) draws
    # mean |z| of a standard normal is 0.80: the draws average to mu, their spread is sigma
    assert 0.7 < ((draws.mean(0) - many.expected).abs() / standard_error).mean() < 0.9
    assert torch.allclose(draws.std(0).mean(), std.mean(), rtol=0.05)


def test_conditional_draws_do_not_depend_on_the_device_or_the_global_rng():
    clip = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    first = make_fill("conditional", clip, InputSpace(), samples=2, seed=7)
    rng = torch.get_rng_state()
    again = make_fill("conditional", clip, InputSpace(), samples=2, seed=7)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(first.draws, again.draws))
    if torch.cuda.is_available():
        on_gpu = make_fill("conditional", clip.cuda(), InputSpace(), samples=2, seed=7)
        for cpu_draw, gpu_draw in zip(first.draws, on_gpu.draws):
            torch.testing.assert_close(gpu_draw.cpu(), cpu_draw, rtol=1e-5, atol=1e-5)
