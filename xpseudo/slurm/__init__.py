"""Running xpseudo on Slurm through submitit (no detectron2 needed to submit).

``options`` turns command-line flags into a submitit executor (validated before anything is
submitted, against ``partition``'s reading of sinfo on a real cluster); ``jobs`` holds the
picklable callables the jobs run (training, pseudo-label shards, merge, pipeline summary), each of
which imports detectron2 only when it runs; ``pipeline_jobs`` chains the pipeline's stages and
``status`` tells where they stand. Dependencies run one way: the library's command lines use
``options`` only, the jobs call the library, and the tools call the jobs.
"""
from .options import SlurmOptionError, add_slurm_arguments, build_executor, finish_slurm_arguments, job_port, print_submitted

__all__ = ["SlurmOptionError", "add_slurm_arguments", "build_executor", "finish_slurm_arguments", "job_port", "print_submitted"]
