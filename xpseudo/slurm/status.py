"""Where a pipeline submitted with ``--slurm`` stands: each stage's jobs, their Slurm state, and why
a stage failed or will never run, from one command (``tools/run_pipeline.py --status``).

``record_jobs`` writes OUTPUT/slurm_jobs.json at submission (job ids and the submitit files of
each job). The state comes from ``scontrol`` (jobs Slurm still remembers), else ``sacct`` (where
accounting is on), else from the job's submitit result file; the reason of a failure is the last
line of the job's Python traceback (its result file) or of its stderr log.
"""
import json
import os
import pickle
import subprocess
from typing import Dict, List, Optional

from xpseudo.utils.io import InputError, atomic_write_json, load_json

JOBS_FILE = "slurm_jobs.json"
ENDED_BADLY = ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED")


def record_jobs(output: str, stages: Dict[str, list]) -> str:
    """Write OUTPUT/slurm_jobs.json for ``stages`` (stage name -> submitit jobs, in order)."""
    recorded = [{"stage": stage, "jobs": [{"job_id": str(job.job_id), "result": str(job.paths.result_pickle),
                                            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)} for job in jobs]}
                for stage, jobs in stages.items()]
    path = os.path.join(output, JOBS_FILE)
    os.makedirs(output, exist_ok=True)
    atomic_write_json(path, {"stages": recorded}, indent=2)
    return path


def _run(command: List[str]) -> Optional[str]:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def slurm_state(job_id: str) -> Dict[str, str]:
    """JobState and Reason of a job (or array task "12_3"); {} when Slurm no longer knows it."""
    out = _run(["scontrol", "-o", "show", "job", job_id])
    if out:
        fields = dict(item.partition("=")[::2] for item in out.split() if "=" in item)
        return {"state": fields.get("JobState", ""), "reason": fields.get("Reason", "")}
    out = _run(["sacct", "-n", "-P", "-X", "-o", "State,Reason", "-j", job_id])
    if out and out.strip():
        state, _, reason = out.strip().splitlines()[0].partition("|")
        return {"state": state.split()[0], "reason": reason}
    return {}


def _result(path: str):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError):
        return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def job_status(job: Dict[str, str]) -> Dict[str, str]:
    """State and reason of one recorded job."""
    status = slurm_state(job["job_id"])
    result = _result(job["result"])
    if not status:
        status = {"state": {"success": "COMPLETED", "error": "FAILED"}.get(result[0] if result else None, "UNKNOWN"), "reason": ""}
    why = ""
    if result and result[0] == "error":
        why = _last_line(result[1])
    elif status["state"] in ENDED_BADLY and os.path.exists(job["stderr"]):
        with open(job["stderr"], errors="replace") as f:
            why = _last_line(f.read()[-20000:])
    elif status.get("reason") == "DependencyNeverSatisfied" or (status["state"] == "CANCELLED" and "Dependency" in status.get("reason", "")):
        why = "never ran: a job it waits for failed"
    return {**status, "why": why, "log": job["stderr"]}


def pipeline_status(output: str) -> str:
    """One line per stage: the stage, its job ids, their state, and why it failed or cannot run."""
    path = os.path.join(output, JOBS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: no pipeline was submitted with --slurm to {output}")
    data = load_json(path, "pipeline job record")
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not all(
            isinstance(st, dict) and isinstance(st.get("stage"), str) and isinstance(st.get("jobs"), list) and st["jobs"]
            and all(isinstance(j, dict) and {"job_id", "result", "stderr"} <= set(j) for j in st["jobs"]) for st in stages):
        raise InputError(path, "not a job record of run_pipeline.py --slurm: expected 'stages', each with 'stage' and "
                               "'jobs' holding 'job_id', 'result' and 'stderr'")
    width = max([20] + [len(stage["stage"]) + 1 for stage in stages])  # names stay apart from the job ids
    lines = [f"{'stage':<{width}} {'job':<13} {'state':<17} why"]
    first_failure = None
    for stage in stages:
        statuses = [(job, job_status(job)) for job in stage["jobs"]]
        states = sorted({s["state"] for _, s in statuses})
        ids = statuses[0][0]["job_id"].split("_")[0] + (f" (x{len(statuses)})" if len(statuses) > 1 else "")
        bad = [(job, s) for job, s in statuses if s["state"] in ENDED_BADLY or s["why"]]
        why = ""
        if bad:
            job, s = bad[0]
            why = s["why"] or s.get("reason", "")
            if s["state"] == "FAILED" and first_failure is None:
                first_failure = (stage["stage"], job["job_id"], s["log"])
        elif any(s.get("reason") not in ("", "None", None) for _, s in statuses):
            why = next(s["reason"] for _, s in statuses if s.get("reason") not in ("", "None", None))
        lines.append(f"{stage['stage']:<{width}} {ids:<13} {'/'.join(states):<17} {why}".rstrip())
    if first_failure:
        stage, job_id, log = first_failure
        lines.append(f"\nfirst failed stage: {stage} (job {job_id}); its log: {log}")
    return "\n".join(lines)
