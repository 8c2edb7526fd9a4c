"""tools/run_pipeline.py --slurm: the stages as jobs that wait for each other."""
import argparse
import os

from xpseudo.data.dataset_files import absolute_dataset_file_opts

from .jobs import PipelineSummaryJob, submit_pseudo_labels, submit_training
from .options import build_executor, print_submitted, slurm_fields
from .status import record_jobs


def submit_pipeline(args, argv):
    """Submit every stage of ``xpseudo.pipeline.pipeline_stages`` whose output is missing, each
    waiting for the stage it follows (grounding -> teacher -> shards -> merge -> student -> each
    later round's shards, merge and student; the oracle after the teacher), then the summary after
    all of them. ``argv``: the pipeline's own command line without --slurm (the summary job reruns
    it). The job ids go to OUTPUT/slurm_jobs.json, which ``run_pipeline.py --status`` reads."""
    from xpseudo.pipeline import pipeline_stages, plan

    slurm = slurm_fields(args)
    slurm["job_dir"] = os.path.abspath(args.job_dir or os.path.join(args.output, "slurm_jobs"))
    p = plan(args)
    jobs, last_of, previous, previous_name, waited = {}, {}, [], None, set()
    for stage in pipeline_stages(p):
        waits_for = last_of.get(stage.after, []) if stage.after else previous
        waited.add(stage.after or previous_name)
        if os.path.exists(stage.done):
            submitted = []
        elif stage.kind == "label":
            labeling = argparse.Namespace(**slurm, config_file=stage.config_file, dataset=stage.dataset, output=stage.output,
                                          num_shards=args.num_shards, shard_index=None, merge=False, opts=list(stage.opts))
            shards, merge = submit_pseudo_labels(labeling, dependency=waits_for, require_weights=False)
            suffix = stage.name[len("pseudo labels"):]  # "" or " round k"
            jobs[f"pseudo-label shards{suffix}"], jobs[f"merge{suffix}"] = shards, [merge]
            submitted = [merge]
        else:
            training = argparse.Namespace(**slurm, config_file=stage.config_file, resume=True, eval_only=False, num_gpus=args.num_gpus,
                                          num_machines=1, machine_rank=0, dist_url="auto", opts=list(stage.opts))
            submitted = [submit_training(training, dependency=waits_for, name="xpm-" + stage.name.replace(" ", "-"))]
            jobs[stage.name] = submitted
        last_of[stage.name] = submitted
        if not stage.after:
            previous, previous_name = submitted, stage.name
    # the summary waits for the ends of the chain (no other stage waits for them): all is done then
    ends = [job for name, submitted in last_of.items() if name not in waited for job in submitted]
    executor = build_executor(argparse.Namespace(**slurm), "xpm-summary", after=ends, nodes=1)  # evaluation runs on one node
    summary = executor.submit(PipelineSummaryJob(absolute_dataset_file_opts(argv)))
    print_submitted("evaluation and summary", [summary])
    jobs["summary"] = [summary]
    print(f"job ids recorded in {record_jobs(p.output, jobs)}; see where they stand with --status")
    return jobs
