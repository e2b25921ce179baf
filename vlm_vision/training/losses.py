"""Contrastive image-text losses: SigLIP's sigmoid loss, CLIP's softmax loss, and a ring-distributed sigmoid loss.

All take L2-normalised embeddings where row i of `image_emb` and row i of
`text_emb` are a matching pair, as `DualEncoder.forward` returns them.
`logit_scale` is t' (the learned log temperature, t = exp(t')) and
`logit_bias` is b, both 1-element tensors.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP paper, sec. 2.5: temperature 0.07


def _check_pairs(image_emb: Tensor, text_emb: Tensor, *scalars: Tensor) -> None:
    """Raise ValueError unless the embeddings are (B, D) pairs and each scalar has one element."""
    if image_emb.ndim != 2 or text_emb.shape != image_emb.shape:
        raise ValueError(
            f"Expected image and text embeddings of the same shape (B, D) where row i of each is a pair, "
            f"got image {tuple(image_emb.shape)} and text {tuple(text_emb.shape)}"
        )
    for scalar in scalars:
        if scalar.numel() != 1:
            raise ValueError(f"Expected a 1-element logit scale or bias, got shape {tuple(scalar.shape)}")


def _sigmoid_nll_sum(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, logit_bias: Tensor, positives_on_diagonal: bool
) -> Tensor:
    """Sum over all image-text pairs of -log sigmoid(z_ij * (t <x_i, y_j> + b)).

    z_ij = +1 on the diagonal when `positives_on_diagonal` (texts of the images' own
    batch), else every pair is a negative (texts from another device's batch).
    """
    logits = logit_scale.exp() * image_emb @ text_emb.T + logit_bias  # (B_img, B_txt)
    labels = -torch.ones_like(logits)  # z_ij = -1: negatives
    if positives_on_diagonal:
        labels = labels + 2 * torch.eye(*logits.shape, dtype=logits.dtype, device=logits.device)  # z_ii = +1
    return -F.logsigmoid(labels * logits).sum()


def sigmoid_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """SigLIP loss (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", eq. 1).

    `-1/B sum_i sum_j log sigmoid(z_ij (t <x_i, y_j> + b))`, z_ij = +1 for matching pairs, -1 otherwise:
    each of the B^2 pairs is an independent binary classification, so no softmax over the batch is needed.

    Equals transformers' `SiglipModel(..., return_loss=True).loss`: it takes the mean over
    the B rows of `logits_per_text` (texts) of each row's sum over images, while this is the
    mean over images of each row's sum over texts. With B images and B texts both are the sum
    of all B^2 terms divided by B.
    """
    _check_pairs(image_emb, text_emb, logit_scale, logit_bias)
    return _sigmoid_nll_sum(image_emb, text_emb, logit_scale, logit_bias, positives_on_diagonal=True) / len(image_emb)


def softmax_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP loss (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision").

    Symmetric cross-entropy over `t X Y^T`: image i must pick text i among the B texts
    (rows) and text j must pick image j among the B images (columns); mean of both directions.
    """
    _check_pairs(image_emb, text_emb, logit_scale)
    logits = logit_scale.exp() * image_emb @ text_emb.T  # (B, B), row i = image i against every text
    targets = torch.arange(len(logits), device=logits.device)  # (B,) the matching pair is on the diagonal
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


# --- Distributed sigmoid loss: text embeddings travel round a ring of ranks ---


def _send_recv(sends: list[tuple[Tensor, int]], recv_from: list[int], group: dist.ProcessGroup | None) -> list[Tensor]:
    """Send each `(tensor, global_rank)` and receive one like-shaped tensor from each rank of `recv_from`, all at once.

    Posting every send and receive in one `batch_isend_irecv` lets all ranks exchange
    simultaneously without deadlock. Received tensors take the first sent tensor's shape:
    every rank must hold the same local batch size.
    """
    like = sends[0][0]
    received = [torch.empty(like.shape, dtype=like.dtype, device=like.device) for _ in recv_from]  # contiguous
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), peer, group=group) for tensor, peer in sends]
    ops += [dist.P2POp(dist.irecv, buffer, peer, group=group) for buffer, peer in zip(received, recv_from)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


def _neighbours(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """Global (left, right) ranks of this rank's neighbours on the ring of `group`.

    Global because `P2POp` takes global ranks (its `group_peer` argument is newer than torch 2.4).
    """
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    if group is None:
        return left, right
    return dist.get_global_rank(group, left), dist.get_global_rank(group, right)


class _ShiftRight(torch.autograd.Function):
    """Send `x` to the right neighbour and return what the left neighbour sent.

    Backward runs the ring the other way: the gradient of the received tensor goes
    back to the left neighbour, who owns it, and the gradient of our `x` arrives from
    the right neighbour, who used it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        left, right = _neighbours(group)
        return _send_recv([(x, right)], [left], group)[0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        left, right = _neighbours(ctx.group)
        return _send_recv([(grad, left)], [right], ctx.group)[0], None


class _ShiftBothWays(torch.autograd.Function):
    """Send `to_left` left and `to_right` right; return `(from_left, from_right)`.

    Its backward is the same exchange: the gradient of `from_left` goes back left, where
    it was that rank's `to_right`, and the gradient of `from_right` goes back right.
    """

    @staticmethod
    def forward(ctx, to_left: Tensor, to_right: Tensor, group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor]:
        ctx.group = group
        left, right = _neighbours(group)
        from_left, from_right = _send_recv([(to_left, left), (to_right, right)], [left, right], group)
        return from_left, from_right

    @staticmethod
    def backward(ctx, grad_from_left: Tensor, grad_from_right: Tensor) -> tuple[Tensor, Tensor, None]:
        left, right = _neighbours(ctx.group)
        grad_to_left, grad_to_right = _send_recv(
            [(grad_from_left, left), (grad_from_right, right)], [left, right], ctx.group
        )
        return grad_to_left, grad_to_right, None


def _texts_from_other_ranks(text_emb: Tensor, group: dist.ProcessGroup | None, bidirectional: bool) -> list[Tensor]:
    """The W-1 other ranks' text embeddings, each (b, D), passed hop by hop round the ring (autograd-aware)."""
    world_size = dist.get_world_size(group)
    if not bidirectional or world_size == 2:  # with 2 ranks left and right are the same rank
        received, travelling = [], text_emb
        for _ in range(world_size - 1):
            travelling = _ShiftRight.apply(travelling, group)
            received.append(travelling)
        return received
    # Both directions at once: (W-1)//2 two-way hops, plus one one-way hop when W-1 is odd.
    received, to_left, to_right = [], text_emb, text_emb
    for _ in range((world_size - 1) // 2):
        from_left, from_right = _ShiftBothWays.apply(to_left, to_right, group)
        received += [from_left, from_right]
        to_left, to_right = from_right, from_left  # keep each batch moving the way it came
    if (world_size - 1) % 2:
        received.append(_ShiftRight.apply(to_right, group))
    return received


def distributed_sigmoid_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    group: dist.ProcessGroup | None = None,
    bidirectional: bool = False,
) -> Tensor:
    """SigLIP loss over the global batch of B = W * b pairs, from this rank's local b pairs.

    Chunked form of the SigLIP paper (sec. 3.3), like open_clip's `SigLipLoss`: this
    rank's images meet its own texts (positives on the diagonal), then the other
    ranks' texts, which arrive round a ring in W-1 neighbour exchanges (all negatives).
    No rank ever holds the (B, B) logits. `bidirectional` sends texts both ways round
    the ring, halving the number of hops. Every rank must call it with the same b.

    Returns `S_r / b`, where S_r is the sum, over this rank's b images, of their
    -log sigmoid terms against all B texts. The full-batch loss is `sum_r S_r / B`,
    i.e. the mean over ranks of the returned values (all_reduce them to log it).

    Gradients: the exchanges are autograd functions, so the gradient of a text
    embedding used on another rank is sent back to its owner and added there (backward
    exchanges too, so every rank must call it). Each rank's parameters thus receive
    their part of d(sum_r S_r)/b, through whichever rank used their outputs; summed
    over ranks that is d(sum_r S_r)/b = (B/b) d(full loss) = W d(full loss), and DDP's
    average over the W ranks leaves exactly the full-batch `sigmoid_loss` gradient.

    Without torch.distributed initialised, or with one rank, it is `sigmoid_loss`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return sigmoid_loss(image_emb, text_emb, logit_scale, logit_bias)
    _check_pairs(image_emb, text_emb, logit_scale, logit_bias)
    total = _sigmoid_nll_sum(image_emb, text_emb, logit_scale, logit_bias, positives_on_diagonal=True)
    for other_texts in _texts_from_other_ranks(text_emb, group, bidirectional):
        total = total + _sigmoid_nll_sum(image_emb, other_texts, logit_scale, logit_bias, positives_on_diagonal=False)
    return total / len(image_emb)


def gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Every rank's `x` concatenated along dim 0, with gradients routed back to their owners.

    For the softmax loss across processes: each rank computes the full-batch loss on
    gathered embeddings; the gradient reaching a rank's own slice is the sum over
    ranks (W times the full-batch gradient), which DDP's averaging divides back by W.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x, group=group))
