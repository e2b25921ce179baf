"""Losses against hand computations, naive loops, transformers, and the full batch when split over ranks."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vlm_vision.model import INIT_LOGIT_BIAS, INIT_LOGIT_SCALE
from vlm_vision.training.losses import CLIP_INIT_LOGIT_SCALE, distributed_sigmoid_loss, sigmoid_loss, softmax_loss


def _log_sigmoid(x: float) -> float:
    return -math.log(1 + math.exp(-x))


def _hand_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Images (1, 0), (0, 1) and texts (1, 0), (0.6, 0.8): inner products [[1, 0.6], [0, 0.8]]."""
    return torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_sigmoid_loss_by_hand():
    images, texts = _hand_pairs()
    # t = 10, b = -10: logits [[0, -4], [-10, -2]]; z = +1 on the diagonal, -1 off it.
    expected = -(_log_sigmoid(0.0) + _log_sigmoid(4.0) + _log_sigmoid(10.0) + _log_sigmoid(-2.0)) / 2
    loss = sigmoid_loss(images, texts, torch.tensor([INIT_LOGIT_SCALE]), torch.tensor([INIT_LOGIT_BIAS]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_softmax_loss_by_hand():
    images, texts = _hand_pairs()
    # t = 10: logits [[10, 6], [0, 8]]; cross-entropy of the diagonal over rows, then over columns.
    rows = (-10 + math.log(math.exp(10) + math.exp(6))) + (-8 + math.log(math.exp(0) + math.exp(8)))
    columns = (-10 + math.log(math.exp(10) + math.exp(0))) + (-8 + math.log(math.exp(6) + math.exp(8)))
    expected = (rows / 2 + columns / 2) / 2
    loss = softmax_loss(images, texts, torch.tensor([math.log(10)]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def _naive_sigmoid_loss(images, texts, logit_scale, logit_bias):
    """Eq. 1 of the SigLIP paper as a double loop of scalar ops."""
    batch, dim = images.shape
    total = 0
    for i in range(batch):
        for j in range(batch):
            z = 1.0 if i == j else -1.0
            logit = torch.exp(logit_scale[0]) * sum(images[i, k] * texts[j, k] for k in range(dim)) + logit_bias[0]
            total = total + torch.log(1 + torch.exp(-z * logit))  # -log sigmoid(z * logit)
    return total / batch


def _naive_softmax_loss(images, texts, logit_scale):
    """CLIP's symmetric cross-entropy as loops: image i picks text i among all texts, and text j picks image j."""
    batch, dim = images.shape
    logit = [[torch.exp(logit_scale[0]) * sum(images[i, k] * texts[j, k] for k in range(dim)) for j in range(batch)]
             for i in range(batch)]
    image_to_text = sum(-logit[i][i] + torch.log(sum(torch.exp(logit[i][j]) for j in range(batch)))
                        for i in range(batch))
    text_to_image = sum(-logit[j][j] + torch.log(sum(torch.exp(logit[i][j]) for i in range(batch)))
                        for j in range(batch))
    return (image_to_text / batch + text_to_image / batch) / 2


def _random_leaves(batch: int = 3, dim: int = 4):
    generator = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    scale = torch.tensor([INIT_LOGIT_SCALE], dtype=torch.float64)
    bias = torch.tensor([-3.0], dtype=torch.float64)  # not the init value, so positives and negatives both matter
    return [t.requires_grad_() for t in (images, texts, scale, bias)]


def _value_and_grads(loss_fn, leaves):
    loss = loss_fn(*leaves)
    return [loss.detach(), *torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize(
    "loss_fn, naive_fn, n_leaves",
    [(sigmoid_loss, _naive_sigmoid_loss, 4), (softmax_loss, _naive_softmax_loss, 3)],
    ids=["sigmoid", "softmax"],
)
def test_value_and_gradients_match_naive_loops(loss_fn, naive_fn, n_leaves):
    leaves = _random_leaves()[:n_leaves]
    ours, naive = _value_and_grads(loss_fn, leaves), _value_and_grads(naive_fn, leaves)
    for name, a, b in zip(["loss", "image_emb", "text_emb", "logit_scale", "logit_bias"], ours, naive):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0, msg=lambda m: f"{name}: {m}")


def test_sigmoid_loss_matches_transformers():
    from transformers import SiglipConfig, SiglipModel

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=16, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=50,
                max_position_embeddings=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).eval()
    with torch.no_grad():  # transformers' init zeroes both; pick values where every term matters
        model.logit_scale.fill_(1.7)
        model.logit_bias.fill_(-3.1)
    pixel_values = torch.randn(4, 3, 16, 16)
    input_ids = torch.randint(3, 50, (4, 8))
    with torch.no_grad():
        out = model(pixel_values=pixel_values, input_ids=input_ids, return_loss=True)
        ours = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale, model.logit_bias)
    assert out.loss.item() > 1.0  # a real loss, not a saturated zero
    torch.testing.assert_close(ours, out.loss, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_fn", [sigmoid_loss, softmax_loss, distributed_sigmoid_loss])
@pytest.mark.parametrize(
    "image_shape, text_shape", [((2, 4), (3, 4)), ((2, 4), (2, 5)), ((4,), (4,))], ids=["B", "D", "1-D"]
)
def test_mismatched_shapes_raise(loss_fn, image_shape, text_shape):
    scalars = [torch.zeros(1)] if loss_fn is softmax_loss else [torch.zeros(1), torch.zeros(1)]
    with pytest.raises(ValueError) as error:
        loss_fn(torch.zeros(image_shape), torch.zeros(text_shape), *scalars)
    assert f"image {image_shape}" in str(error.value) and f"text {text_shape}" in str(error.value)


def test_logit_scale_must_have_one_element():
    images, texts = _hand_pairs()
    with pytest.raises(ValueError, match=r"1-element.*\(2,\)"):
        sigmoid_loss(images, texts, torch.zeros(2), torch.zeros(1))


def test_clip_init_is_temperature_0_07():
    assert math.exp(-CLIP_INIT_LOGIT_SCALE) == pytest.approx(0.07)


# --- Distributed: the ring loss under DDP against the single-process full batch ---


class _Towers(nn.Module):
    """A stand-in dual encoder: one linear layer per modality, then L2 normalisation, plus t' and b."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(5, 4)
        self.text = nn.Linear(3, 4)
        self.logit_scale = nn.Parameter(torch.tensor([INIT_LOGIT_SCALE]))
        self.logit_bias = nn.Parameter(torch.tensor([-3.0]))  # off the init value so every term has weight

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1)


def _ddp_worker(rank: int, world_size: int, folder: Path, bidirectional: bool, members: list[int] | None) -> None:
    """One rank: its slice of the global batch through DDP, ring loss, backward; saves loss and gradients.

    With `members`, only those ranks train, in their own process group (whose ranks differ from the global ones).
    """
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=30))
    try:
        group = dist.new_group(members) if members else None  # every rank must take part in new_group
        if members and rank not in members:
            return
        setup = torch.load(folder / "setup.pt")
        towers = _Towers().double()
        towers.load_state_dict(setup["state"])
        model = DistributedDataParallel(towers, process_group=group)
        group_rank, group_size = dist.get_rank(group), dist.get_world_size(group)
        local = len(setup["images"]) // group_size
        rows = slice(group_rank * local, (group_rank + 1) * local)
        image_emb, text_emb = model(setup["images"][rows], setup["texts"][rows])  # (b, 4) each
        loss = distributed_sigmoid_loss(image_emb, text_emb, towers.logit_scale, towers.logit_bias,
                                        group=group, bidirectional=bidirectional)
        loss.backward()  # DDP averages parameter gradients over the ranks
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss, group=group)
        mean_loss /= group_size
        grads = {name: p.grad for name, p in towers.named_parameters()}
        torch.save({"loss": mean_loss, "grads": grads}, folder / f"result{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(world_size: int, *args, timeout_s: float = 60.0) -> None:
    """Run `_ddp_worker` on `world_size` processes; a child's exception re-raises here, a hang fails the test."""
    context = mp.spawn(_ddp_worker, args=(world_size, *args), nprocs=world_size, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a child failed
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"distributed workers still running after {timeout_s} s")


@pytest.mark.parametrize(
    "world_size, batch, bidirectional, members",
    # bidir-4: a two-way hop, then a one-way hop; bidir-5: two two-way hops, the second with distinct inputs;
    # subgroup: ranks 1 and 2 of 3 in their own group, so group ranks aren't global ranks.
    [(2, 8, False, None), (3, 6, False, None), (4, 8, True, None), (5, 10, True, None), (3, 4, False, [1, 2])],
    ids=["ring-2x4", "ring-3x2", "bidir-4x2", "bidir-5x2", "subgroup-2x2"],
)
def test_distributed_matches_full_batch(tmp_path, monkeypatch, world_size, batch, bidirectional, members):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # children inherit it; 2 cores shared by up to 4 processes
    generator = torch.Generator().manual_seed(2)
    towers = _Towers().double()
    images = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    texts = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    torch.save({"state": towers.state_dict(), "images": images, "texts": texts}, tmp_path / "setup.pt")

    full = sigmoid_loss(*towers(images, texts), towers.logit_scale, towers.logit_bias)
    full.backward()

    _spawn(world_size, tmp_path, bidirectional, members)
    # float64 throughout, so agreement far tighter than 1e-6 is expected: only summation order differs.
    for rank in members or range(world_size):
        result = torch.load(tmp_path / f"result{rank}.pt")
        torch.testing.assert_close(result["loss"], full.detach(), atol=1e-10, rtol=0)
        for name, p in towers.named_parameters():
            torch.testing.assert_close(result["grads"][name], p.grad, atol=1e-10, rtol=0,
                                       msg=lambda m: f"rank {rank}, gradient of {name}: {m}")


def test_distributed_on_one_rank_is_sigmoid_loss(tmp_path):
    leaves = _random_leaves()
    expected = _value_and_grads(sigmoid_loss, leaves)
    assert not dist.is_initialized()
    for name, a, b in zip(["loss", "image_emb", "text_emb", "logit_scale", "logit_bias"],
                          _value_and_grads(distributed_sigmoid_loss, leaves), expected):
        assert torch.equal(a, b), f"not initialised: {name}"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        for name, a, b in zip(["loss", "image_emb", "text_emb", "logit_scale", "logit_bias"],
                              _value_and_grads(distributed_sigmoid_loss, leaves), expected):
            assert torch.equal(a, b), f"one rank: {name}"
    finally:
        dist.destroy_process_group()
