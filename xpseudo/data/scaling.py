"""detectron2's training-data pieces, reworked to cost no Python object per dataset item.

At Conceptual Captions scale (millions of pseudo-labeled images) two of them dominate a training
process's memory: ``MapDataset`` keeps a set of every index (for its rarely used retry), and
``RepeatFactorTrainingSampler`` builds every epoch through one tensor object per item (0.5 GB for
1M items, again each epoch; with Open Images balanced against CC an epoch is short). The versions
here give the same items in the same order.
"""
import logging
import random

import torch
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils.serialize import PicklableWrapper

logger = logging.getLogger(__name__)


class VectorizedRepeatFactorSampler(RepeatFactorTrainingSampler):
    """``RepeatFactorTrainingSampler`` whose epochs are built with one ``repeat_interleave``: the
    same stochastic rounding from the same generator, so the same indices."""

    def _get_epoch_indices(self, generator):
        rands = torch.rand(len(self._frac_part), generator=generator)
        repeats = (self._int_part + (rands < self._frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(repeats), dtype=torch.int64), repeats)


class MapWithRetry(torch.utils.data.Dataset):
    """``mapper(dataset[i])``; where the mapper drops an item (returns None), a random other item
    is tried instead, as detectron2's ``MapDataset`` does, and the dropped index is remembered (only
    those: MapDataset holds all N as its candidates)."""

    def __init__(self, dataset, mapper, seed: int = 42):
        self.dataset, self.mapper = dataset, PicklableWrapper(mapper)
        self._rng = random.Random(seed)
        self._dropped = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        index, attempts = int(index), 0
        while True:
            mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
            self._dropped.add(index)
            attempts += 1
            if len(self._dropped) == len(self):
                raise RuntimeError("the mapper dropped every item of the dataset")
            if attempts % 3 == 0:
                logger.warning(f"failed to map dataset item {index}, {attempts} attempts in a row")
            while index in self._dropped:
                index = self._rng.randrange(len(self))
