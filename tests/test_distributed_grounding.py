"""The grounding loss over the caption images of all processes (gloo, 2 CPU processes; no
detectron2): the same value on every process as one process computing it on the whole batch, and
gradients that, averaged as DistributedDataParallel averages them, are the whole batch's."""
import os
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from xpseudo.losses.grounding import grounding_loss
from xpseudo.utils.distributed import gather_padded, scale_for_ddp

TEMPERATURE = 0.1


def ragged_batch(seed=0):
    """5 images with 2-6 regions and 1-4 words each: processes will hold different B and lengths."""
    g = torch.Generator().manual_seed(seed)
    regions = [F.normalize(torch.randn(n, 8, generator=g), dim=-1) for n in (3, 6, 2, 5, 4)]
    words = [F.normalize(torch.randn(n, 8, generator=g), dim=-1) for n in (2, 1, 4, 3, 2)]
    return regions, words


def pad(tensors):
    longest = max(t.shape[0] for t in tensors)
    batch = torch.stack([F.pad(t, (0, 0, 0, longest - t.shape[0])) for t in tensors])
    mask = torch.stack([torch.arange(longest) < t.shape[0] for t in tensors])
    return batch, mask


def whole_batch_reference():
    regions, words = ragged_batch()
    regions = [r.clone().requires_grad_(True) for r in regions]
    words = [w.clone().requires_grad_(True) for w in words]
    loss = grounding_loss(*pad(regions), *pad(words), TEMPERATURE)
    loss.backward()
    return loss.detach(), [r.grad for r in regions], [w.grad for w in words]


PARTS = {0: [0, 1], 1: [2, 3, 4]}  # images of each process: 2 and 3, of different lengths


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        regions, words = ragged_batch()
        mine = PARTS[rank]
        local_regions = [regions[i].clone().requires_grad_(True) for i in mine]
        local_words = [words[i].clone().requires_grad_(True) for i in mine]
        all_regions, all_region_mask = gather_padded(*pad(local_regions))
        all_words, all_word_mask = gather_padded(*pad(local_words))
        loss = scale_for_ddp(grounding_loss(all_regions, all_region_mask, all_words, all_word_mask, TEMPERATURE))
        loss.backward()
        torch.save({"loss": loss.detach(), "shape": tuple(all_regions.shape), "word_shape": tuple(all_words.shape),
                    "regions": [r.grad for r in local_regions], "words": [w.grad for w in local_words]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


class TestGatheredGroundingLoss(unittest.TestCase):
    def test_one_process_is_unchanged(self):
        regions, words = ragged_batch()
        batch = pad(regions)
        self.assertIs(gather_padded(*batch)[0], batch[0])
        loss = torch.tensor(2.5, requires_grad=True)
        self.assertIs(scale_for_ddp(loss), loss)

    def test_two_processes_equal_the_whole_batch(self):
        reference_loss, reference_regions, reference_words = whole_batch_reference()
        with tempfile.TemporaryDirectory() as tmp:
            mp.start_processes(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=2, start_method="spawn")
            results = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]
        for rank, result in enumerate(results):
            # every process sees all 5 images, padded to the longest of all (6 regions, 4 words)
            self.assertEqual(result["shape"], (5, 6, 8))
            self.assertEqual(result["word_shape"], (5, 4, 8))
            torch.testing.assert_close(result["loss"], reference_loss)
            for local, image in enumerate(PARTS[rank]):
                # a process back-propagates into its own images only, at world-size times the
                # gradient: DDP's average over the 2 processes then gives the whole batch's
                torch.testing.assert_close(result["regions"][local] / 2, reference_regions[image])
                torch.testing.assert_close(result["words"][local] / 2, reference_words[image])


if __name__ == "__main__":
    unittest.main()
