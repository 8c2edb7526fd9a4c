"""What a Slurm partition's nodes offer (from ``sinfo``), and requests they can never satisfy.

Slurm accepts a job asking for more CPUs, memory or GPUs per node than any node of its partition
has, and leaves it pending for ever (Reason=PartitionConfig or Resources). We ask ``sinfo`` first
and refuse such a request at submission, naming the flag to change.
"""
import re
import shutil
import subprocess
from typing import List, NamedTuple, Optional

from .errors import SlurmOptionError


class NodeResources(NamedTuple):
    cpus: int
    memory_mb: int
    gpus: int


def gpu_count(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field: "gpu:8", "gpu:a100:4(S:0-1),shard:8", "(null)" -> 8, 4, 0."""
    total = 0
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item.strip())
        if item.startswith("gpu:"):
            count = item.rsplit(":", 1)[-1]
            total += int(count) if count.isdigit() else 1
    return total


def parse_sinfo(text: str, partition: Optional[str]) -> List[NodeResources]:
    """Nodes of ``partition`` (None: the default one, marked "*") from
    ``sinfo -h -N -o "%P|%c|%m|%G"`` output."""
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, cpus, memory, gres = fields
        if (partition is None and not name.endswith("*")) or (partition is not None and name.rstrip("*") != partition):
            continue
        number = lambda value: int(re.match(r"\d*", value).group() or 0)  # noqa: E731  "1+" etc.
        nodes.append(NodeResources(number(cpus), number(memory), gpu_count(gres)))
    return nodes


def partition_nodes(partition: Optional[str]) -> Optional[List[NodeResources]]:
    """The partition's nodes as sinfo reports them; None when sinfo cannot be asked."""
    if shutil.which("sinfo") is None:
        return None
    try:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_sinfo(result.stdout, partition)


def check_request(partition: Optional[str], nodes: int, gpus_per_node: int, cpus_per_node: int, mem_gb: Optional[int],
                  cpus_flag: str = "--cpus-per-task", available: Optional[List[NodeResources]] = None) -> None:
    """Raise SlurmOptionError naming the flag when no node (or not enough nodes) of the partition
    could ever run the request. ``available``: the nodes (default: ask sinfo; unknown = no check)."""
    if available is None:
        available = partition_nodes(partition)
        if available is None:
            return
    where = f"partition {partition}" if partition else "the default partition"
    if not available:
        raise SlurmOptionError(f"--partition: sinfo lists no node in {where}" if partition else
                               "--partition: this cluster has no default partition; name one")
    most = NodeResources(max(n.cpus for n in available), max(n.memory_mb for n in available), max(n.gpus for n in available))
    problems = []
    if gpus_per_node > most.gpus:
        problems.append(f"--gpus-per-node {gpus_per_node}: the nodes of {where} have at most {most.gpus} GPUs"
                        + (" (use --gpus-per-node 0 for a CPU partition)" if most.gpus == 0 else ""))
    if cpus_per_node > most.cpus:
        problems.append(f"{cpus_flag} {cpus_per_node}: the nodes of {where} have at most {most.cpus} CPUs")
    if mem_gb and mem_gb * 1024 > most.memory_mb:
        problems.append(f"--mem-gb {mem_gb}: the nodes of {where} have at most {most.memory_mb // 1024} GB")
    fitting = [n for n in available if n.gpus >= gpus_per_node and n.cpus >= cpus_per_node
               and (not mem_gb or n.memory_mb >= mem_gb * 1024)]
    if not problems and nodes > len(fitting):
        problems.append(f"--nodes {nodes}: only {len(fitting)} node(s) of {where} can hold the request")
    if problems:
        raise SlurmOptionError("the job could never start (it would pend for ever): " + "; ".join(problems))
