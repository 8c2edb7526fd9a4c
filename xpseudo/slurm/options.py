"""Slurm flags shared by the tools, and the submitit executor they describe."""
import argparse
import os
import re
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import SlurmOptionError
from .partition import check_request

CLUSTERS = ("slurm", "local", "debug")


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Slurm (through submitit)")
    group.add_argument("--slurm", action="store_true", help="submit instead of running here")
    group.add_argument("--slurm-cluster", choices=CLUSTERS, default="slurm",
                       help="submitit executor: slurm, or local (run as a local background job; what the tests use)")
    group.add_argument("--nodes", type=int, default=1)
    group.add_argument("--gpus-per-node", type=int, default=None,
                       help="default: 8 on Slurm; with --slurm-cluster local or debug, the GPUs of this machine. "
                            "0: a CPU partition (training then runs --num-gpus processes per node with MODEL.DEVICE cpu)")
    group.add_argument("--partition", default=None)
    group.add_argument("--time", type=int, default=60 * 24, help="time limit in minutes")
    group.add_argument("--job-dir", default=None, help="submitit folder (logs, pickles); default ./slurm_jobs, for run_pipeline.py OUTPUT/slurm_jobs")
    group.add_argument("--mem-gb", type=int, default=None, help="memory per node")
    group.add_argument("--cpus-per-gpu", type=int, default=10, help="CPUs asked per GPU (the default of --cpus-per-task)")
    group.add_argument("--cpus-per-task", type=int, default=None,
                       help="CPUs of each task (one task per node); default: --cpus-per-gpu x GPUs, or one per process on CPU")
    group.add_argument("--constraint", default=None)
    group.add_argument("--comment", default=None)
    group.add_argument("--account", default=None)
    group.add_argument("--qos", default=None)
    group.add_argument("--seconds-per-iter", type=float, default=None,
                       help="expected training speed; with it the checkpoint period is checked against --time")
    group.add_argument("--array-parallelism", type=int, default=64, help="job arrays: tasks running at once")
    group.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                       help="any other submitit Slurm parameter (e.g. exclude=node7, signal_delay_s=120); "
                            "names submitit does not know are refused")
    group.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                       help="any sbatch option written as is into the batch file (e.g. mail-type=END)")


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def finish_slurm_arguments(args):
    """Defaults that depend on where jobs run: --gpus-per-node is 8 on a Slurm cluster, and for the
    local executors (which run on this machine) the GPUs this machine has (0: CPU processes)."""
    if getattr(args, "gpus_per_node", 0) is None:
        args.gpus_per_node = 8 if args.slurm_cluster == "slurm" else local_gpu_count()
    return args


def slurm_fields(args) -> Dict[str, object]:
    """The Slurm flags of a parsed command line, to hand on to the jobs another tool submits."""
    parser = argparse.ArgumentParser(add_help=False)
    add_slurm_arguments(parser)
    return {a.dest: getattr(args, a.dest) for a in parser._actions if hasattr(args, a.dest)}


def _key_values(items: Iterable[str], flag: str) -> Dict[str, object]:
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SlurmOptionError(f"{flag} expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return parsed


def check_job_dir(job_dir: str) -> str:
    """Create the job folder and prove it is writable, before any submission."""
    job_dir = os.path.abspath(job_dir)
    try:
        os.makedirs(job_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=job_dir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise SlurmOptionError(f"job dir {job_dir} is not writable: {e.strerror or e}") from e
    return job_dir


def on_cpu(opts: List[str], gpus_per_node: int) -> List[str]:
    """Config overrides of a job without GPUs: its model runs on the CPU, whatever the config says."""
    if gpus_per_node > 0 or "MODEL.DEVICE" in opts[::2]:
        return list(opts)
    return list(opts) + ["MODEL.DEVICE", "cpu"]


def cpus_per_task(args, gpus: int, tasks_per_node: int = 1, processes: int = 1) -> Tuple[int, str]:
    """CPUs of each task and the flag that set them (for errors): ``--cpus-per-task`` if given;
    else ``--cpus-per-gpu`` x GPUs, or one CPU per process for a CPU job (``gpus`` 0), shared by
    the node's tasks."""
    if getattr(args, "cpus_per_task", None):
        return args.cpus_per_task, "--cpus-per-task"
    if gpus > 0:
        how = f"--cpus-per-task (default: --cpus-per-gpu {args.cpus_per_gpu} x {gpus} GPUs)"
        return max(1, args.cpus_per_gpu * gpus // tasks_per_node), how
    return max(1, processes // tasks_per_node), "--cpus-per-task (default: one per process)"


def build_executor(args, name: str, tasks_per_node: int = 1, gpus_per_node: Optional[int] = None, after: Sequence = (),
                   processes: int = 1, nodes: Optional[int] = None):
    """A submitit AutoExecutor for ``args`` (flags of ``add_slurm_arguments``); every parameter is
    checked by submitit here, and (on a real cluster) the request per node against what ``sinfo``
    reports for the partition, so a bad one fails before anything is submitted rather than pending
    forever. ``processes``: processes per node of a CPU job (its default CPUs). ``nodes``: the job's
    nodes where they are not ``--nodes`` (a shard or a merge needs one). Its jobs start after
    the jobs ``after`` succeed: a Slurm afterok dependency (an array is waited on as a whole), or,
    for the local executor, which has no dependencies, by waiting for them here."""
    import submitit

    finish_slurm_arguments(args)
    job_dir = check_job_dir(args.job_dir or os.path.join(os.getcwd(), "slurm_jobs"))
    gpus = args.gpus_per_node if gpus_per_node is None else gpus_per_node
    cpus, cpus_flag = cpus_per_task(args, gpus, tasks_per_node, processes)
    parameters = dict(
        name=name,
        nodes=(args.nodes if nodes is None else nodes) if args.slurm_cluster == "slurm" else 1,  # a local job is one machine
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus if gpus > 0 else None,  # a CPU job asks for no GPU at all
        cpus_per_task=cpus,
        timeout_min=args.time,
        mem_gb=args.mem_gb,
        slurm_partition=args.partition,
        slurm_constraint=args.constraint,
        slurm_comment=args.comment,
        slurm_account=args.account,
        slurm_qos=args.qos,
        slurm_array_parallelism=args.array_parallelism,
        slurm_signal_delay_s=120,  # time for checkpoint() to requeue before the kill
    )
    parameters.update({f"slurm_{k}": v for k, v in _key_values(args.slurm_option, "--slurm-option").items()})
    if args.slurm_cluster != "slurm" and gpus > local_gpu_count():  # the local executors run on this machine
        raise SlurmOptionError(f"--gpus-per-node {gpus}: this machine has {local_gpu_count()} GPU(s) and --slurm-cluster "
                               f"{args.slurm_cluster} runs the jobs here (leave the flag out, or give 0 for CPU processes)")
    if args.slurm_cluster == "slurm":
        check_request(args.partition, nodes=parameters["nodes"], gpus_per_node=gpus, cpus_per_node=cpus * tasks_per_node,
                      mem_gb=args.mem_gb, cpus_flag=cpus_flag)
    additional = _key_values(args.sbatch, "--sbatch")
    if after and args.slurm_cluster == "slurm":
        additional["dependency"] = "afterok:" + ":".join(sorted({str(job.job_id).split("_")[0] for job in after}))
        # when a stage fails its dependents end (CANCELLED, DependencyNeverSatisfied) instead of
        # pending for ever, whatever the cluster's SchedulerParameters say
        additional.setdefault("kill-on-invalid-dep", "yes")
    elif after:
        for job in after:
            job.result()  # raises if the job failed
    if additional:
        parameters["slurm_additional_parameters"] = additional
    try:
        executor = submitit.AutoExecutor(folder=os.path.join(job_dir, "%j"), cluster=args.slurm_cluster)
    except RuntimeError as e:  # no srun: not on a Slurm cluster
        raise SlurmOptionError(f"cannot submit to {args.slurm_cluster}: {e} (use --slurm-cluster local to run here)") from e
    try:
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    except (NameError, ValueError, TypeError, AssertionError) as e:
        raise SlurmOptionError(f"submitit refused the Slurm options: {e}") from e
    return executor


def job_port(job_id: str) -> int:
    """A rendezvous port from the job id: jobs sharing a first node rarely collide."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return 15000 + int(digits) % 20000


def print_submitted(what: str, jobs) -> None:
    jobs = list(jobs)
    first = jobs[0]
    ids = first.job_id.split("_")[0] + (f" (array of {len(jobs)})" if len(jobs) > 1 else "")
    print(f"submitted {what}: job {ids}; logs: {first.paths.stdout.parent}")
