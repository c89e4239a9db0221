"""Co-occurrence integration: partners by cosine of displacements, self excluded, still tracks alone."""

import torch

from aosa.kernels.cooccurrence import cooccurrence_groups


def tracks_moving(directions: list[tuple[float, float]], frames: int = 5) -> torch.Tensor:
    steps = torch.arange(frames, dtype=torch.float32)[:, None]
    return torch.stack([torch.tensor([50.0, 50.0]) + steps * torch.tensor(d) for d in directions])


def test_partners_share_direction():
    # tubes 0, 2, 4 move right (with different speeds); 1, 3, 5 move down
    tracks = tracks_moving([(1, 0), (0, 1), (2, 0.1), (0.1, 2), (3, 0), (0, 3)])
    groups = cooccurrence_groups(tracks, top_k=2)
    assert groups[:, 0].tolist() == list(range(6))
    for i in range(6):
        assert set(groups[i, 1:].tolist()) == ({0, 2, 4} if i % 2 == 0 else {1, 3, 5}) - {i}


def test_still_track_has_no_partners_and_is_no_partner():
    tracks = tracks_moving([(1, 0), (0, 0), (1, 0.2), (0.9, 0)])
    groups = cooccurrence_groups(tracks, top_k=3)
    assert groups[1].tolist() == [1, 1, 1, 1]
    assert 1 not in groups[[0, 2, 3]].tolist()


def test_top_k_zero_is_single_mask_and_ties_go_to_lower_index():
    tracks = tracks_moving([(1, 0)] * 4)
    assert cooccurrence_groups(tracks, top_k=0).tolist() == [[0], [1], [2], [3]]
    assert cooccurrence_groups(tracks, top_k=1)[:, 1].tolist() == [1, 0, 0, 0]
