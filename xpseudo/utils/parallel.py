"""Map a function over items in worker processes, results in input order."""
import multiprocessing
from typing import Callable, Iterable, Iterator


def ordered_map(function: Callable, items: Iterable, workers: int, chunksize: int = 16) -> Iterator:
    """``map(function, items)``, in ``workers`` processes when more than one (``function`` must be
    a module-level function so it can be pickled)."""
    if workers <= 1:
        yield from map(function, items)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(function, items, chunksize=chunksize)
