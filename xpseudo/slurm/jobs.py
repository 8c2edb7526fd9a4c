"""What the Slurm jobs run, and the submissions of the three tools.

Each job is a small picklable callable holding the parsed command line of the tool it stands for;
detectron2 is imported only inside the job. Training jobs define ``checkpoint()``: on preemption or
timeout submitit calls it and requeues the same arguments with ``--resume`` on (never appending the
overrides again), and detectron2's checkpointer continues from ``last_checkpoint``.
"""
import copy
import logging
import os
import warnings
from typing import List, Optional

from xpseudo.data.dataset_files import absolute_dataset_file_opts

from .options import build_executor, job_port, on_cpu, print_submitted

logger = logging.getLogger(__name__)


class TrainingJob:
    """tools/train_net.py on every node of the allocation: one task per node, detectron2's launch()
    spawning one process per GPU, tcp:// rendezvous on the first node at a port from the job id."""

    def __init__(self, args):
        self.args = args

    def __call__(self):
        import submitit

        env = submitit.JobEnvironment()
        args = copy.deepcopy(self.args)
        args.num_machines, args.machine_rank = env.num_nodes, env.node
        args.dist_url = f"tcp://{env.hostnames[0]}:{job_port(env.job_id)}"
        from xpseudo.engine.train_main import launch_main

        return launch_main(args)

    def checkpoint(self, *args, **kwargs):
        import submitit

        resumed = copy.deepcopy(self.args)
        resumed.resume = True
        return submitit.helpers.DelayedSubmission(TrainingJob(resumed))


class ShardJob:
    """One shard of tools/generate_pseudo_labels.py (the array task index is the shard index)."""

    def __init__(self, args):
        self.args = args

    def __call__(self, shard_index: int):
        from xpseudo.pseudo.cli import generate

        args = copy.deepcopy(self.args)
        args.shard_index, args.slurm = shard_index, False
        generate(args)
        return shard_index

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)  # the shard resumes its .partial file


class MergeJob:
    def __init__(self, output: str, num_shards: int, image_root: Optional[str] = None):
        self.output, self.num_shards, self.image_root = output, num_shards, image_root

    def __call__(self):
        from xpseudo.pseudo.cli import merge

        merge(self.output, self.num_shards, self.image_root)
        return os.path.join(self.output, "pseudo_labels.json")


class PipelineSummaryJob:
    """tools/run_pipeline.py run again after the stage jobs: every stage's output exists, so it only
    evaluates what is missing and writes the summary."""

    def __init__(self, argv: List[str]):
        self.argv = list(argv)

    def __call__(self):
        from xpseudo.pipeline import main

        return main(self.argv)


def requeue_loss_warnings(max_iter: int, checkpoint_period: int, time_limit_min: int,
                          seconds_per_iter: Optional[float] = None, max_lost_fraction: float = 0.1) -> List[str]:
    """Why a preempted or timed-out job would lose much of its run when requeued."""
    problems = []
    if checkpoint_period >= max_iter:
        problems.append(f"SOLVER.CHECKPOINT_PERIOD {checkpoint_period} >= SOLVER.MAX_ITER {max_iter}: a requeued job restarts from iteration 0")
    elif checkpoint_period > max_lost_fraction * max_iter:
        problems.append(f"SOLVER.CHECKPOINT_PERIOD {checkpoint_period} is over {max_lost_fraction:.0%} of SOLVER.MAX_ITER {max_iter}: "
                        "a requeue can lose that much of the run")
    if seconds_per_iter:
        lost_min = checkpoint_period * seconds_per_iter / 60
        if lost_min > max_lost_fraction * time_limit_min:
            problems.append(f"a checkpoint every {checkpoint_period} iterations (~{lost_min:.0f} min) is over "
                            f"{max_lost_fraction:.0%} of the {time_limit_min} min time limit")
    return problems


def _with_output_dir(opts: List[str], default: str) -> List[str]:
    """OUTPUT_DIR inside the job dir unless the overrides give one."""
    if "OUTPUT_DIR" in opts[::2]:
        return list(opts)
    return list(opts) + ["OUTPUT_DIR", default]


def submit_training(args, dependency=None, name: str = "xpm-train"):
    """Submit tools/train_net.py's work; returns the job. ``dependency``: jobs to wait for.
    One process per GPU of each node; with ``--gpus-per-node 0`` (a CPU partition) ``--num-gpus``
    processes per node on the CPU."""
    from xpseudo.config import load_config

    args = copy.deepcopy(args)
    job_dir = os.path.abspath(args.job_dir or os.path.join(os.getcwd(), "slurm_jobs"))
    args.job_dir = job_dir
    args.opts = on_cpu(_with_output_dir(absolute_dataset_file_opts(args.opts), os.path.join(job_dir, "output")), args.gpus_per_node)
    args.slurm = False
    args.num_gpus = args.gpus_per_node if args.gpus_per_node > 0 else max(args.num_gpus, 1)
    cfg = load_config(args.config_file, args.opts)
    for problem in requeue_loss_warnings(cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD, args.time, args.seconds_per_iter):
        warnings.warn(problem)
        print(f"warning: {problem}")
    executor = build_executor(args, name, after=dependency or (), processes=args.num_gpus)
    job = executor.submit(TrainingJob(args))
    print_submitted(f"training ({cfg.OUTPUT_DIR if 'OUTPUT_DIR' not in args.opts else args.opts[args.opts.index('OUTPUT_DIR') + 1]})", [job])
    return job


def submit_pseudo_labels(args, dependency=None, require_weights: bool = True):
    """A job array, one shard per task, and a merge job that waits for all of it. With the local
    executor (no dependencies) the shards are awaited before the merge is submitted."""
    from detectron2.data import MetadataCatalog

    import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
    from xpseudo.config import load_config
    from xpseudo.pseudo.cli import check_inputs

    args = copy.deepcopy(args)
    num_shards = args.num_shards or 1
    args.num_shards = num_shards
    args.opts = on_cpu(absolute_dataset_file_opts(args.opts), args.gpus_per_node)
    cfg = load_config(args.config_file, args.opts)
    dataset, _ = check_inputs(cfg, args, require_weights=require_weights)  # more shards than images etc.: before submitting
    # --nodes is for training: a shard runs on one GPU of one node, the merge on one node
    shard_executor = build_executor(args, "xpm-pseudo-shard", gpus_per_node=min(args.gpus_per_node, 1), after=dependency or (), nodes=1)
    shard_jobs = shard_executor.map_array(ShardJob(args), list(range(num_shards)))
    print_submitted(f"{num_shards} pseudo-label shards ({os.path.abspath(args.output)})", shard_jobs)
    merge_executor = build_executor(args, "xpm-pseudo-merge", gpus_per_node=0, after=shard_jobs, nodes=1)
    merge_job = merge_executor.submit(MergeJob(os.path.abspath(args.output), num_shards, MetadataCatalog.get(dataset).get("image_root")))
    print_submitted(f"merge ({os.path.abspath(args.output)})", [merge_job])
    return shard_jobs, merge_job


def wait_if_local(args, jobs) -> None:
    """Tools submitting to the local executor wait for their jobs (there is no scheduler to)."""
    if args.slurm_cluster != "slurm":
        for job in jobs:
            job.result()
        print("local jobs finished")
