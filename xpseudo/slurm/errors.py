"""The error of a Slurm request that cannot be submitted."""


class SlurmOptionError(ValueError):
    """A Slurm request that cannot be submitted (found before anything is submitted)."""
