"""``arch_batch: auto``: how many architectures to train fused at once so that they fit the device.

Fused training (:func:`proxynas.training.fit_fused`) pays where one small
network leaves a GPU idle; how many fit depends on the card, the cells and the
summary's image size, so a fixed number is either too timid or fails with an
out-of-memory error. ``auto`` measures instead of guessing:

1. the archs' heaviest network (most parameters, among up to
   :data:`PROBE_CANDIDATES` of them spread over the sample) is trained for
   :data:`PROBE_STEPS` steps plus one evaluation, fused with itself 2 and 4
   times, and the allocator's peak is read each time;
2. peak memory is linear in the number of fused networks (weights, optimizer
   state and activations are all per network; the data batch is shared), so
   the two peaks give a fixed part and a per-network part, and K is the
   largest count whose predicted peak stays within
   :data:`MEMORY_FRACTION` of the free device memory;
3. that K is tried once more the same way and lowered in proportion if its
   measured peak exceeds the budget (the allocator rounds and fragments).

On a CPU ``auto`` means 1: fusion does not pay there (``benchmarks/throughput.py``
measured fused K=4 and K=16 at 0.81-0.85x the one-by-one loop on 2 cores:
the step is bound by arithmetic, and fusion adds gathers and copies).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: share of the free device memory the fused networks may use (the rest absorbs
#: fragmentation and what the allocator rounds up)
MEMORY_FRACTION = 0.8
#: training steps of each probe (the first step allocates the optimizer state)
PROBE_STEPS = 2
#: how many of the sample's archs are built to find the heaviest (evenly spread)
PROBE_CANDIDATES = 256


def fitting_count(peak_bytes: Callable[[int], int], budget_bytes: int, limit: int) -> int:
    """The largest ``K <= limit`` whose peak memory ``peak_bytes(K)`` fits ``budget_bytes`` (at least 1).

    ``peak_bytes`` is measured at K = 2 and 4 for a linear model, then at the
    predicted K; a prediction that overshoots is lowered in proportion once.
    """
    if limit <= 1:
        return 1
    two, four = peak_bytes(2), peak_bytes(4)
    per_network = max((four - two) / 2, 1.0)
    fixed = two - 2 * per_network
    count = int(max(1, min(limit, (budget_bytes - fixed) // per_network)))
    if count in (2, 4):
        measured = two if count == 2 else four
    elif count > 1:
        measured = peak_bytes(count)
    else:
        return 1
    if measured > budget_bytes:
        count = max(1, int(count * budget_bytes / measured))
    return count


def heaviest(archs: Sequence[str], num_params: Callable[[str], int]) -> str:
    """The arch with the most parameters among up to :data:`PROBE_CANDIDATES` evenly spread over ``archs``."""
    step = max(1, len(archs) // PROBE_CANDIDATES)
    candidates = list(archs[::step])
    return max(candidates, key=num_params)


def measures_memory(device: torch.device) -> bool:
    """Whether ``auto`` measures on ``device`` (CUDA); elsewhere it means 1."""
    return device.type == "cuda"


def peak_bytes(run: Callable[[], object], device: torch.device, *, reserved: bool = False) -> int:
    """Bytes the allocator's peak rose above its level before ``run()`` on CUDA ``device``.

    ``reserved``: the peak of the memory the allocator holds rather than of
    the memory in tensors -- for training replayed as CUDA graphs, whose
    private pools stay held while the graphs live although their tensors
    count as freed after capture (so the allocated peak would miss them).
    """
    read_peak, read_now = (
        (torch.cuda.max_memory_reserved, torch.cuda.memory_reserved) if reserved
        else (torch.cuda.max_memory_allocated, torch.cuda.memory_allocated)
    )
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = read_now(device)
    run()
    torch.cuda.synchronize(device)
    return int(read_peak(device) - before)


def free_bytes(device: torch.device) -> int:
    """Free memory of CUDA ``device`` (after releasing the allocator's cached blocks)."""
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)
