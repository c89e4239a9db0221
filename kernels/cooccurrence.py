"""Co-occurrence integration: each tube joins the K tubes whose motion is most alike (cosine)."""

from __future__ import annotations

import torch


def displacements(tracks: torch.Tensor) -> torch.Tensor:
    """Concatenated frame-to-frame displacements u_i, (N, 2(T-1)); zero after a track dies."""
    return (tracks[:, 1:] - tracks[:, :-1]).reshape(tracks.shape[0], -1)


def cooccurrence_groups(tracks: torch.Tensor, top_k: int, eps: float = 1e-6) -> torch.Tensor:
    """Groups (N, K+1): tube i first, then its top-K partners by cosine of displacements.

    A tube is never its own partner. A track whose displacement norm is below `eps` has no partners
    (its cosine is undefined) and is no one's partner; missing partners repeat tube i, which leaves
    the union unchanged. Ties go to the lower index.
    """
    count = tracks.shape[0]
    own = torch.arange(count)
    if top_k == 0 or count == 1:
        return own.unsqueeze(1)
    u = displacements(tracks).double()
    norm = u.norm(dim=1)
    moving = norm >= eps
    unit = u / norm.clamp_min(eps)[:, None]
    similarity = unit @ unit.T
    valid = moving[:, None] & moving[None, :] & ~torch.eye(count, dtype=torch.bool)
    similarity = similarity.masked_fill(~valid, float("-inf"))
    k = min(top_k, count - 1)
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k]
    found = torch.gather(valid, 1, order)
    partners = torch.where(found, order, own[:, None])
    return torch.cat([own.unsqueeze(1), partners], dim=1)
