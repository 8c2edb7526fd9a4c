"""Helpers for losses that compare samples across training processes (plain torch.distributed;
works with gloo on CPU and NCCL on GPU)."""
from typing import List, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_gather(tensor: torch.Tensor) -> List[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def gather_padded(values: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every process's ``values`` (B_k x L_k x D) and ``mask`` (B_k x L_k, False =
    padding) along the batch, padding L to the largest of all. Processes may hold different B and L.

    Gradients: this process's own rows keep theirs (they are the local tensor); the other rows
    are constants. A loss over the gathered batch thus gives each process the gradient for its own
    samples only; ``scale_for_ddp`` turns the DDP average of those into the full-batch gradient.
    """
    if world_size() == 1:
        return values, mask
    sizes = torch.stack(_all_gather(torch.tensor([values.shape[0], values.shape[1]], device=values.device)))
    longest, most = int(sizes[:, 1].max()), int(sizes[:, 0].max())
    values = F.pad(values, (0, 0, 0, longest - values.shape[1]))
    mask = F.pad(mask, (0, longest - mask.shape[1]), value=False)
    # all_gather needs one shape everywhere: pad the batch too, then cut each process's rows back
    batch_pad = most - values.shape[0]
    gathered_values = _all_gather(F.pad(values.detach(), (0, 0, 0, 0, 0, batch_pad)))
    gathered_mask = _all_gather(F.pad(mask, (0, 0, 0, batch_pad), value=False))
    rank = dist.get_rank()
    gathered_values[rank] = values
    count = sizes[:, 0].tolist()
    return (torch.cat([v[:n] for v, n in zip(gathered_values, count)]),
            torch.cat([m[:n] for m, n in zip(gathered_mask, count)]))


def scale_for_ddp(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` with its value unchanged and its gradient times the number of processes.

    For a loss over a batch gathered with ``gather_padded``: each process back-propagates only
    into its own samples, and DistributedDataParallel divides the sum over processes by their
    number; scaling the gradient here makes the result the gradient of the whole batch's loss.
    """
    n = world_size()
    if n == 1:
        return loss
    return loss * n - (loss * (n - 1)).detach()
