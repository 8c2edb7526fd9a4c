"""tools/run_pipeline.py: every XPM stage in one command, here or as dependent Slurm jobs."""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
from typing import List, Optional, Tuple

from xpseudo.data.dataset_files import absolute_dataset_file_opts
from xpseudo.pseudo.cli import labeled_dataset
from xpseudo.slurm.options import add_slurm_arguments, finish_slurm_arguments, on_cpu
from xpseudo.utils.io import atomic_write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USAGE = """All of XPM in one command: [grounding ->] teacher -> pseudo labels -> student -> evaluation.

    python tools/run_pipeline.py --config-dir configs/shapes --output out
    python tools/run_pipeline.py --config-dir configs/coco --output out/coco --num-gpus 8 --num-shards 16
    python tools/run_pipeline.py --config-dir configs/coco --output out/coco --num-shards 64 \\
        --slurm --nodes 2 --gpus-per-node 8 --partition P --time 4320 --job-dir J

The folder holds one xpm_teacher_*.yaml and one xpm_student_*.yaml (ablation configs, whose names
end in a suffix such as _nogrounding, are left out), and may hold one xpm_grounding_*.yaml: stage 1
as its own pretraining (XPMGroundingPretrainer), run first unless --no-grounding; the teacher then
starts from its weights. Stages write to OUTPUT/grounding, OUTPUT/teacher, OUTPUT/pseudo_labels, OUTPUT/student; each is skipped when its output exists and a killed stage
resumes (training from its last checkpoint, pseudo-labeling from its shards), so a rerun goes on
where the last run stopped. The shapes data is generated when missing. The final table (segm and
bbox AP / AP50 for all, base and novel classes, teacher vs student) is printed and written to
OUTPUT/summary.json.

With --slurm the stages are submitted as jobs that wait for each other (teacher -> pseudo-label
shard array -> merge -> student -> evaluation and summary) and the command returns at once with
the job ids (the local executor, --slurm-cluster local, has no dependencies: there the command
waits for each stage before submitting the next).
"""

METRICS = ("AP", "AP50")
SPLIT_KEYS = (("all", ""), ("base", "_base"), ("novel", "_novel"))


# configs in a folder that are ablations of the main teacher/student, not stages of the pipeline
ABLATION_SUFFIXES = ("_nogrounding", "_allwords", "_plainbce", "_batchweight")


def find_configs(config_dir: str):
    """The folder's teacher and student configs (exactly one each, ablations excluded)."""
    found = {}
    for role in ("teacher", "student"):
        paths = sorted(glob.glob(os.path.join(config_dir, f"xpm_{role}_*.yaml")))
        main = [p for p in paths if not p.endswith(tuple(s + ".yaml" for s in ABLATION_SUFFIXES))]
        if len(main) != 1:
            raise SystemExit(f"error: {config_dir} must hold one xpm_{role}_*.yaml config, found {[os.path.basename(p) for p in main]}")
        found[role] = main[0]
    return found["teacher"], found["student"]


def find_grounding_config(config_dir: str) -> Optional[str]:
    """The folder's grounding pretraining config (stage 1 on its own), if it has one."""
    paths = sorted(glob.glob(os.path.join(config_dir, "xpm_grounding_*.yaml")))
    if len(paths) > 1:
        raise SystemExit(f"error: {config_dir} holds more than one xpm_grounding_*.yaml: {[os.path.basename(p) for p in paths]}")
    return paths[0] if paths else None


def run(step: str, args) -> None:
    print(f"\n=== {step}: {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, *args])  # in the user's working directory, as the pipeline
    if result.returncode != 0:
        raise SystemExit(f"error: {step} failed with exit code {result.returncode}; rerun the same command to resume")


def ensure_data(cfg) -> None:
    """Generate the shapes data when missing; other datasets must be prepared by the user."""
    from detectron2.data import MetadataCatalog

    import xpseudo.data.builtin  # noqa: F401

    train = cfg.DATASETS.TRAIN[0]
    json_file = MetadataCatalog.get(train).get("json_file")
    if json_file and os.path.exists(json_file):
        return
    if train.startswith("shapes_"):
        run("prepare data", [os.path.join(REPO, "datasets", "prepare_shapes.py")])
        return
    raise SystemExit(f"error: {json_file or train} is missing; prepare the dataset first (see datasets/README.md)")


def results_of(output_dir: str, datasets) -> dict:
    results = {}
    for name in datasets:
        path = os.path.join(output_dir, "inference", name, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                results[name] = json.load(f)
    return results


LVIS_METRICS = ("AP", "AP50", "APr", "APc", "APf")


def summary_table(summary: dict) -> str:
    """One block per test dataset: AP and AP50 for all, base and novel classes, or LVIS's AP, AP50,
    APr, APc, APf (rare = novel) when the results are LVIS's."""
    split_columns = [(f"{m} {split}", m + key) for m in METRICS for split, key in SPLIT_KEYS]
    lines = []
    for dataset, models in summary["results"].items():
        is_lvis = any("APr" in tasks.get(task, {}) for tasks in models.values() for task in ("segm", "bbox"))
        columns = [(m, m) for m in LVIS_METRICS] if is_lvis else split_columns
        lines.append(f"{dataset:<22}" + "".join(f"{title:>12}" for title, _ in columns))
        for model, tasks in models.items():
            for task in ("segm", "bbox"):
                values = tasks.get(task, {})
                lines.append(f"{model + ' ' + task:<22}" + "".join(f"{values.get(key, float('nan')):>12.2f}" for _, key in columns))
    return "\n".join(lines)


def plan(args, prepare_data: bool = True) -> argparse.Namespace:
    """Configs, folders and overrides of every stage (the shapes data is generated if missing,
    unless ``prepare_data`` is False)."""
    from xpseudo.config import load_config

    teacher_config, student_config = find_configs(args.config_dir)
    output = os.path.abspath(args.output)
    teacher_dir, labels_dir, student_dir = (os.path.join(output, d) for d in ("teacher", "pseudo_labels", "student"))
    common = on_cpu(args.opts, args.gpus_per_node)  # a CPU partition: every stage, evaluation included
    teacher_opts, student_opts = [*common, *args.teacher_opts], [*common, *args.student_opts]
    # stage 1 runs where the family has its config; --grounding insists on it, --no-grounding skips it
    grounding_config = find_grounding_config(args.config_dir) if args.grounding is not False else None
    if args.grounding and not grounding_config:
        raise SystemExit(f"error: --grounding: {args.config_dir} has no xpm_grounding_*.yaml")
    grounding_dir = os.path.join(output, "grounding")
    grounding_weights = os.path.join(grounding_dir, "model_final.pth")
    # the teacher's training starts from the grounding pretraining; its labeling pass from itself
    teacher_train_opts = [*teacher_opts, "MODEL.WEIGHTS", grounding_weights] if grounding_config else list(teacher_opts)
    teacher_cfg = load_config(teacher_config, teacher_opts)
    if prepare_data:
        ensure_data(teacher_cfg)
    return argparse.Namespace(
        grounding_config=grounding_config, grounding_dir=grounding_dir, grounding_weights=grounding_weights,
        grounding_opts=[*common, *args.grounding_opts],
        teacher_config=teacher_config, student_config=student_config, output=output, teacher_dir=teacher_dir,
        labels_dir=labels_dir, student_dir=student_dir, teacher_opts=teacher_opts, teacher_train_opts=teacher_train_opts,
        student_opts=student_opts,
        teacher_cfg=teacher_cfg, teacher_weights=os.path.join(teacher_dir, "model_final.pth"),
        pseudo_labels=os.path.join(labels_dir, "pseudo_labels.json"),
        # the student starts from the teacher and trains on its labels
        student_common=[*student_opts, "MODEL.WEIGHTS", os.path.join(teacher_dir, "model_final.pth"),
                        "XPM.PSEUDO_LABELS_FILE", os.path.join(labels_dir, "pseudo_labels.json")],
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", help="folder with one xpm_teacher_*.yaml and one xpm_student_*.yaml (not needed with --status)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--num-shards", type=int, default=1, help="pseudo-label shards (run one after another here)")
    parser.add_argument("--opts", nargs="*", default=[], help="overrides for every stage, KEY VALUE pairs")
    parser.add_argument("--grounding", action=argparse.BooleanOptionalAction, default=None,
                        help="stage 1 as its own pretraining (the folder's xpm_grounding_*.yaml), the teacher starting from it: "
                             "run by default where the folder has that config; --grounding requires it, --no-grounding skips it "
                             "(the teacher then starts from MODEL.WEIGHTS and grounds captions in its own training only)")
    parser.add_argument("--grounding-opts", nargs="*", default=[], help="overrides for the grounding pretraining only")
    parser.add_argument("--teacher-opts", nargs="*", default=[], help="overrides for the teacher only")
    parser.add_argument("--student-opts", nargs="*", default=[], help="overrides for the student only")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each stage's command (config, overrides, output) and exit; nothing is run, prepared or submitted")
    parser.add_argument("--status", action="store_true",
                        help="after --slurm: each stage's job, its state, and why a stage failed or will never run")
    add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config_dir and not args.status:
        parser.error("--config-dir is required")
    for key in ("opts", "grounding_opts", "teacher_opts", "student_opts"):  # the stages run as other processes
        setattr(args, key, absolute_dataset_file_opts(getattr(args, key)))
    return finish_slurm_arguments(args)


def main(argv=None) -> int:
    """Every stage here, one after another (what the tool runs without --slurm, and what the Slurm
    pipeline's last job runs to evaluate and summarise)."""
    return run_pipeline(parse_args(argv))


def stage_commands(p: argparse.Namespace, args) -> List[Tuple[str, List[str], str]]:
    """(stage, command line, the file whose existence means the stage is done) of every training
    stage, in order."""
    train_net = os.path.join(REPO, "tools", "train_net.py")
    gpus = ["--num-gpus", str(args.num_gpus)]
    stages = []
    if p.grounding_config:
        stages.append(("grounding", [train_net, "--config-file", p.grounding_config, "--resume", *gpus, *p.grounding_opts,
                                     "OUTPUT_DIR", p.grounding_dir], p.grounding_weights))
    stages.append(("teacher", [train_net, "--config-file", p.teacher_config, "--resume", *gpus, *p.teacher_train_opts,
                               "OUTPUT_DIR", p.teacher_dir], p.teacher_weights))
    stages.append(("pseudo labels", [os.path.join(REPO, "tools", "generate_pseudo_labels.py"), "--config-file", p.teacher_config,
                                     "--dataset", labeled_dataset(p.teacher_cfg), "--output", p.labels_dir,
                                     "--num-shards", str(args.num_shards), *p.teacher_opts, "MODEL.WEIGHTS", p.teacher_weights],
                   p.pseudo_labels))
    stages.append(("student", [train_net, "--config-file", p.student_config, "--resume", *gpus, *p.student_common,
                               "OUTPUT_DIR", p.student_dir], os.path.join(p.student_dir, "model_final.pth")))
    return stages


def print_plan(p: argparse.Namespace, args) -> int:
    """``--dry-run``: each stage's command, and whether its output is already there."""
    for number, (stage, command, done) in enumerate(stage_commands(p, args), start=1):
        state = "done, skipped" if os.path.exists(done) else "to run"
        print(f"{number}. {stage} ({state}): {os.path.basename(sys.executable)} {' '.join(shlex.quote(c) for c in command)}")
    print(f"then: each model evaluated on its DATASETS.TEST, the table written to {os.path.join(p.output, 'summary.json')}")
    if args.slurm:
        print("with --slurm these are submitted as jobs that wait for each other (the pseudo labels as an array of shards and a merge)")
    return 0


def run_pipeline(args) -> int:
    from xpseudo.config import load_config

    p = plan(args, prepare_data=not args.dry_run)
    if args.dry_run:
        return print_plan(p, args)
    teacher_cfg_file, student_cfg_file, output = p.teacher_config, p.student_config, p.output
    teacher_dir, labels_dir, student_dir = p.teacher_dir, p.labels_dir, p.student_dir
    teacher_opts, teacher_cfg = p.teacher_opts, p.teacher_cfg
    train_net = os.path.join(REPO, "tools", "train_net.py")
    gpus = ["--num-gpus", str(args.num_gpus)]

    for stage, command, done in stage_commands(p, args):
        if not os.path.exists(done):
            run(stage, command)
    teacher_weights, pseudo_labels = p.teacher_weights, p.pseudo_labels
    student_weights = os.path.join(student_dir, "model_final.pth")
    student_common = p.student_common

    student_cfg = load_config(student_cfg_file, student_common)
    summary = {"config_dir": args.config_dir, "teacher_config": teacher_cfg_file, "student_config": student_cfg_file,
               "pseudo_labels": pseudo_labels, "results": {}}
    for role, cfg_file, cfg, directory, weights, opts in (
        ("teacher", teacher_cfg_file, teacher_cfg, teacher_dir, teacher_weights, teacher_opts),
        ("student", student_cfg_file, student_cfg, student_dir, student_weights, student_common),
    ):
        tests = list(cfg.DATASETS.TEST)
        missing = [t for t in tests if t not in results_of(directory, tests)]
        if missing:  # training evaluates at its end; this covers a run stopped after saving
            run(f"evaluate {role}", [train_net, "--config-file", cfg_file, "--eval-only", *gpus, *opts, "MODEL.WEIGHTS", weights,
                                     "OUTPUT_DIR", directory, "DATASETS.TEST", str(tuple(missing))])
        for dataset, result in results_of(directory, tests).items():
            summary["results"].setdefault(dataset, {})[role] = result
    with open(os.path.join(labels_dir, "provenance.json")) as f:
        summary["pseudo_label_counts"] = json.load(f)["counts"]
    atomic_write_json(os.path.join(output, "summary.json"), summary, indent=2)
    print("\n" + summary_table(summary))
    print(f"\nwrote {os.path.join(output, 'summary.json')}")
    return 0

