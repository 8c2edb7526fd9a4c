"""tools/run_pipeline.py --slurm: the stages as jobs that wait for each other."""
import argparse
import os

from xpseudo.data.dataset_files import absolute_dataset_file_opts
from xpseudo.pseudo.cli import labeled_dataset

from .jobs import PipelineSummaryJob, submit_pseudo_labels, submit_training
from .options import build_executor, print_submitted, slurm_fields
from .status import record_jobs


def submit_pipeline(args, argv):
    """Submit grounding (where the family has it) -> teacher -> shards -> merge -> student ->
    summary; stages whose output exists are
    skipped. ``argv``: the pipeline's own command line without --slurm (the summary job reruns it).
    The job ids go to OUTPUT/slurm_jobs.json, which ``run_pipeline.py --status`` reads."""
    from xpseudo.pipeline import plan

    slurm = slurm_fields(args)
    slurm["job_dir"] = os.path.abspath(args.job_dir or os.path.join(args.output, "slurm_jobs"))
    p = plan(args)
    teacher_cfg_file, student_cfg_file, teacher_cfg = p.teacher_config, p.student_config, p.teacher_cfg
    teacher_dir, labels_dir, student_dir = p.teacher_dir, p.labels_dir, p.student_dir
    teacher_opts = p.teacher_opts
    teacher_weights, pseudo_labels = p.teacher_weights, p.pseudo_labels

    def training(config_file, opts):
        return argparse.Namespace(**slurm, config_file=config_file, resume=True, eval_only=False, num_gpus=args.num_gpus,
                                  num_machines=1, machine_rank=0, dist_url="auto", opts=list(opts))

    previous, jobs = [], {}
    if p.grounding_config and not os.path.exists(p.grounding_weights):
        previous = [submit_training(training(p.grounding_config, [*p.grounding_opts, "OUTPUT_DIR", p.grounding_dir]), name="xpm-grounding")]
        jobs["grounding"] = previous
    if not os.path.exists(teacher_weights):
        previous = [submit_training(training(teacher_cfg_file, [*p.teacher_train_opts, "OUTPUT_DIR", teacher_dir]), dependency=previous, name="xpm-teacher")]
        jobs["teacher"] = previous
    if not os.path.exists(pseudo_labels):
        labeling = argparse.Namespace(**slurm, config_file=teacher_cfg_file, dataset=labeled_dataset(teacher_cfg),
                                      output=labels_dir, num_shards=args.num_shards, shard_index=None, merge=False,
                                      opts=[*teacher_opts, "MODEL.WEIGHTS", teacher_weights])
        shards, merge = submit_pseudo_labels(labeling, dependency=previous, require_weights=False)
        jobs["pseudo-label shards"], jobs["merge"] = shards, [merge]
        previous = [merge]
    if not os.path.exists(os.path.join(student_dir, "model_final.pth")):
        student = [*p.student_common, "OUTPUT_DIR", student_dir]
        previous = [submit_training(training(student_cfg_file, student), dependency=previous, name="xpm-student")]
        jobs["student"] = previous
    executor = build_executor(argparse.Namespace(**slurm), "xpm-summary", after=previous, nodes=1)  # evaluation runs on one node
    summary = executor.submit(PipelineSummaryJob(absolute_dataset_file_opts(argv)))
    print_submitted("evaluation and summary", [summary])
    jobs["summary"] = [summary]
    print(f"job ids recorded in {record_jobs(p.output, jobs)}; see where they stand with --status")
    return jobs
