"""A private single-node Slurm cluster for the tests (no detectron2 here).

``SlurmCluster`` starts munged, slurmctld and slurmd from Debian's ``slurm-wlm`` and ``munge``
packages under a temporary directory: its own munge key and socket, a generated slurm.conf with
free localhost ports, its own state and spool folders. ``env()`` gives the environment the client
commands (sbatch, squeue, scontrol ...) and submitit need (``SLURM_CONF``). Nothing outside the
directory is touched, so it runs beside a real cluster configuration or none.

``python -m tests.slurm_cluster DIR`` starts one and keeps it up until Ctrl-C, for trying the tools
by hand (it prints the ``export SLURM_CONF=...`` line).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel", "srun")


def _find(binary: str) -> Optional[str]:
    # daemons live in sbin, often outside a non-root PATH
    return shutil.which(binary) or next((p for p in (f"/usr/sbin/{binary}", f"/usr/local/sbin/{binary}") if os.access(p, os.X_OK)), None)


def missing_binaries() -> List[str]:
    """The daemons and client commands the cluster needs that are not installed."""
    return [b for b in DAEMONS + CLIENTS if _find(b) is None]


def _free_ports(count: int) -> List[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return total_kb // 1024 - 512  # leave the node some room, like a real node's RealMemory


class SlurmCluster:
    """One node (this machine, all its CPUs), one partition ``debug``, daemons and jobs running as
    the current user (tested as root, which is how CI runs; slurmd as another user is untested)."""

    def __init__(self, directory: str, cpus: Optional[int] = None, partition: str = "debug"):
        self.directory = os.path.abspath(directory)
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = _memory_mb()
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = os.path.join(self.directory, "slurm.conf")
        self.munge_socket = os.path.join(self.directory, "munge", "munge.socket")
        self._pid_files: Dict[str, str] = {}
        self._signallers: List[subprocess.Popen] = []

    # --- lifecycle ---
    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        for sub in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        os.chmod(os.path.join(self.directory, "munge"), 0o700)  # munged refuses a socket dir others can write
        self._start_munge()
        self._write_conf()
        log = os.path.join(self.directory, "log")
        self._pid_files["slurmctld"] = os.path.join(self.directory, "slurmctld.pid")
        self._pid_files["slurmd"] = os.path.join(self.directory, "slurmd.pid")
        # -i: ignore any saved state (a fresh cluster every time)
        self._daemon([_find("slurmctld"), "-f", self.conf, "-i", "-L", os.path.join(log, "slurmctld.log")])
        self._daemon([_find("slurmd"), "-f", self.conf, "-N", self.node, "-L", os.path.join(log, "slurmd.log")])
        self._wait_idle(timeout)
        return self

    def stop(self) -> None:
        """Cancel every job, stop the daemons (slurmd, slurmctld, munged) and wait for them."""
        self.stop_signalling()
        if os.path.exists(self.conf):
            subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env(), capture_output=True, timeout=30)
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(daemon)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 20
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- for the tests ---
    def env(self) -> Dict[str, str]:
        """os.environ plus what Slurm's clients need to talk to this cluster."""
        env = dict(os.environ, SLURM_CONF=self.conf)
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_")) and k != "SLURM_CONF"]:
            del env[key]  # a test run inside a Slurm job must not leak that job's settings
        return env

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(list(command), env=self.env(), capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def signal(self, job_id: str, name: str = "USR2") -> None:
        """``scancel --signal=NAME JOB`` without waiting for it: when the job requeues itself on the
        signal (submitit does on USR2), scancel keeps retrying its other steps ("Job can not be
        altered now") for a minute or more."""
        self._signallers.append(subprocess.Popen(["scancel", f"--signal={name}", str(job_id)], env=self.env(),
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop_signalling(self) -> None:
        """Stop the scancel calls of ``signal`` still retrying (once their job has requeued, a late
        retry would signal the restarted job again)."""
        for process in self._signallers:
            process.kill()
            process.wait()
        self._signallers.clear()

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, Reason, ExitCode ...); {} once purged."""
        out = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        fields = {}
        for item in out.split():
            key, sep, value = item.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def wait_for(self, job_ids, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"),
                 timeout: float = 600.0) -> Dict[str, Dict[str, str]]:
        """Wait until every job is in one of ``states``; their ``job`` dicts. Raises on timeout."""
        deadline = time.time() + timeout
        while True:
            jobs = {str(j): self.job(j) for j in job_ids}
            if all(info.get("JobState") in states for info in jobs.values()):
                return jobs
            if time.time() > deadline:
                raise TimeoutError(f"jobs not in {states} after {timeout:.0f}s: "
                                   f"{ {j: (i.get('JobState'), i.get('Reason')) for j, i in jobs.items()} }\n{self.logs_tail()}")
            time.sleep(1)

    def logs_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = os.path.join(self.directory, "log", name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(out)

    # --- internals ---
    def _start_munge(self) -> None:
        munge = os.path.join(self.directory, "munge")
        key = os.path.join(munge, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self._pid_files["munged"] = os.path.join(munge, "munged.pid")
        # --force: munged refuses to run as root, or with a key in a temp dir, without it
        self._daemon([_find("munged"), "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                      f"--pid-file={self._pid_files['munged']}", f"--log-file={os.path.join(munge, 'munged.log')}",
                      f"--seed-file={os.path.join(munge, 'munged.seed')}"])
        deadline = time.time() + 10
        while not os.path.exists(self.munge_socket):
            if time.time() > deadline:
                raise RuntimeError(f"munged did not start: see {os.path.join(munge, 'munged.log')}")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        ctld_port, slurmd_port = _free_ports(2)
        user = _user()
        d = self.directory
        lines = [
            "ClusterName=xpseudo-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={self._pid_files.get('slurmctld', d + '/slurmctld.pid')}",
            f"SlurmdPidFile={d}/slurmd.pid",
            "ProctrackType=proctrack/linuxproc",  # no cgroups needed (containers, CI)
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",  # CPUs are the consumable: jobs of 1 CPU share the node
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=3600",  # keep finished jobs visible to scontrol for the whole test run
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=10",
            "Waittime=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _daemon(self, command: List[str]) -> None:
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{os.path.basename(command[0])} failed to start ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}\n{self.logs_tail()}")

    def _pid(self, daemon: str) -> Optional[int]:
        path = self._pid_files.get(daemon)
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (TypeError, OSError, ValueError):
            return None

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env(), capture_output=True, text=True, timeout=30)
            state = result.stdout.strip()
            if result.returncode == 0 and state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test node did not come up (sinfo state {state!r})\n{self.logs_tail()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


if __name__ == "__main__":
    directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp/xpseudo-slurm"
    cluster = SlurmCluster(directory).start()
    print(f"export SLURM_CONF={cluster.conf}\n(Ctrl-C stops the cluster)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
