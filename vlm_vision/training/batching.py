"""Which records share a training batch: `epoch_batches`, a function of (seed, epoch) alone, so that a resumed
run sees exactly the batches an uninterrupted one would (`vlm_vision.training.train`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import torch


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, groups: Sequence[Hashable] | None = None,
    clusters: Sequence[Hashable] | None = None,
) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation, cut into n // batch_size full batches.

    With `groups` (one key per record, e.g. its main caption), no batch holds two records of a
    group (two images captioned "red heart" in one batch would each count the other's caption
    as a negative): the records are ordered group by group, groups in random order, and dealt
    round-robin, so a group's records land in different batches. Only a group larger than the
    number of batches shares one.

    With `clusters` (one key per record, e.g. its emoji subcategory), batches are made of runs of
    whole clusters, so look-alike classes ("man firefighter", "woman firefighter") meet as each
    other's negatives instead of in about batch_size / classes of the batches. The epoch is taken
    in passes that hold each group at most once (`_cluster_passes`); each pass is ordered cluster
    by cluster, clusters in an order of its own, and the passes are cut into consecutive batches.
    Only a batch that straddles two passes may hold a group twice (on the emoji corpus, 2 and 10 of
    18,593 records in the first two epochs).
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    count = n // batch_size
    if clusters is not None:
        order = _cluster_passes(order, groups if groups is not None else range(n), clusters)
        return [order[i * batch_size: (i + 1) * batch_size] for i in range(count)]
    if groups is not None:
        rank: dict[Hashable, int] = {}
        for index in order:
            rank.setdefault(groups[index], len(rank))  # groups in the order the permutation meets them
        order = sorted(order, key=lambda index: rank[groups[index]])[: count * batch_size]  # stable sort
        return [order[j::count] for j in range(count)]
    return [order[i * batch_size: (i + 1) * batch_size] for i in range(count)]


def _cluster_passes(order: list[int], groups: Sequence[Hashable], clusters: Sequence[Hashable]) -> list[int]:
    """`order` rearranged pass by pass, each pass cluster by cluster, clusters in the order the pass meets them.

    A group of s records is spread evenly over P passes (P the largest group's size): its k-th record goes to pass
    floor((k + phase) P / s), with a phase in [0, 1) set by where the permutation first meets the group. So each
    pass holds a group at most once and about n / P records; putting the k-th records in pass k instead would
    leave the last passes to the largest groups alone, and their records would share batches.
    """
    sizes = Counter(groups[index] for index in order)
    largest = max(sizes.values())
    phase: dict[Hashable, float] = {}  # per group, in [0, 1)
    met: Counter[Hashable] = Counter()  # records of each group placed so far
    cluster_place: dict[tuple[int, Hashable], int] = {}  # (pass, cluster) -> first met, first placed
    sort_key: dict[int, tuple[int, int, int]] = {}
    for position, index in enumerate(order):
        group = groups[index]
        size = sizes[group]
        pass_number = int((met[group] + phase.setdefault(group, position / len(order))) * largest / size)
        met[group] += 1
        place = cluster_place.setdefault((pass_number, clusters[index]), len(cluster_place))
        sort_key[index] = (pass_number, place, position)
    return sorted(order, key=sort_key.__getitem__)
