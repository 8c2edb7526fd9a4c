"""tools/run_pipeline.py: every XPM stage in one command, here or as dependent Slurm jobs."""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
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
        oracle = models.get("oracle", {}).get("segm", {}).get("AP50_novel")
        if oracle:  # how close each model trained on pseudo labels gets to ground truth
            shares = [f"{model} {tasks.get('segm', {}).get('AP50_novel', float('nan')) / oracle:.2f}"
                      for model, tasks in models.items() if model not in ("teacher", "oracle")]
            lines.append("novel segm AP50 as a share of the oracle's: " + ", ".join(shares))
    quality = summary.get("pseudo_label_quality")
    if quality:
        columns = [(f"{m} {split}", m + key) for m in ("AP50", "AP75") for split, key in SPLIT_KEYS]
        lines.append(f"\npseudo labels against {quality['ground_truth']} (the labeled images)")
        lines.append(f"{'':<22}" + "".join(f"{title:>12}" for title, _ in columns))
        for name, tasks in quality.items():
            if name == "ground_truth":
                continue
            for task in ("segm", "bbox"):
                values = tasks.get(task, {})
                lines.append(f"{name + ' ' + task:<22}" + "".join(f"{values.get(key, float('nan')):>12.2f}" for _, key in columns))
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
    teacher_weights = os.path.join(teacher_dir, "model_final.pth")
    rounds = later_rounds(output, args.rounds, args.round_init, student_opts, teacher_opts, teacher_weights,
                          os.path.join(student_dir, "model_final.pth"))
    # the all-class annotations of the training images: the oracle's data, and what labels are scored against
    all_classes = all_class_dataset(load_config(student_config, student_opts), args.oracle_dataset, required=args.oracle)
    oracle_dataset = all_classes if args.oracle else None
    oracle_dir = os.path.join(output, "oracle")
    return argparse.Namespace(
        rounds=rounds, oracle_dataset=oracle_dataset, oracle_dir=oracle_dir,
        oracle_opts=[*student_opts, "MODEL.WEIGHTS", teacher_weights, "DATASETS.TRAIN", str((oracle_dataset,)), "XPM.PSEUDO_LABELS_FILE", ""],
        labels_gt_dataset=all_classes,
        grounding_config=grounding_config, grounding_dir=grounding_dir, grounding_weights=grounding_weights,
        grounding_opts=[*common, *args.grounding_opts],
        teacher_config=teacher_config, student_config=student_config, output=output, teacher_dir=teacher_dir,
        labels_dir=labels_dir, student_dir=student_dir, teacher_opts=teacher_opts, teacher_train_opts=teacher_train_opts,
        student_opts=student_opts,
        teacher_cfg=teacher_cfg, teacher_weights=teacher_weights,
        pseudo_labels=os.path.join(labels_dir, "pseudo_labels.json"),
        # the student starts from the teacher and trains on its labels
        student_common=[*student_opts, "MODEL.WEIGHTS", teacher_weights,
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
    parser.add_argument("--rounds", type=int, default=1,
                        help="self-training rounds: round k's student labels the same weak-label dataset (the student's config, the "
                             "labeling overrides of --teacher-opts) and round k+1's student trains on those labels (OUTPUT/round<k>/)")
    parser.add_argument("--round-init", choices=("teacher", "student"), default="teacher",
                        help="where a later round's student starts: the teacher's weights (default) or the round before's student")
    parser.add_argument("--oracle", action="store_true",
                        help="also train the student's config on ground truth of every class (OUTPUT/oracle): the ceiling the "
                             "pseudo labels are measured against")
    parser.add_argument("--oracle-dataset", help="the training images annotated with every class, for --oracle and for scoring "
                                                 "pseudo labels (default: the *_train_all counterpart of DATASETS.TRAIN's *_train_base)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each stage's command (config, overrides, output) and exit; nothing is run, prepared or submitted")
    parser.add_argument("--status", action="store_true",
                        help="after --slurm: each stage's job, its state, and why a stage failed or will never run")
    add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config_dir and not args.status:
        parser.error("--config-dir is required")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    for key in ("opts", "grounding_opts", "teacher_opts", "student_opts"):  # the stages run as other processes
        setattr(args, key, absolute_dataset_file_opts(getattr(args, key)))
    return finish_slurm_arguments(args)


def main(argv=None) -> int:
    """Every stage here, one after another (what the tool runs without --slurm, and what the Slurm
    pipeline's last job runs to evaluate and summarise)."""
    return run_pipeline(parse_args(argv))


@dataclass
class Stage:
    """One stage of the pipeline: a training run ("train") or a pseudo-labeling pass ("label")."""

    name: str
    kind: str
    config_file: str
    opts: List[str]  # config overrides; a training's end with its OUTPUT_DIR, a labeling's hold MODEL.WEIGHTS
    output: str
    done: str  # the file whose existence means the stage is done
    dataset: Optional[str] = None  # the dataset a labeling pass labels
    after: Optional[str] = None  # the stage it waits for (default: the one before it)

    def command(self, num_gpus: int, num_shards: int) -> List[str]:
        if self.kind == "label":
            return [os.path.join(REPO, "tools", "generate_pseudo_labels.py"), "--config-file", self.config_file, "--dataset", self.dataset,
                    "--output", self.output, "--num-shards", str(num_shards), *self.opts]
        return [os.path.join(REPO, "tools", "train_net.py"), "--config-file", self.config_file, "--resume", "--num-gpus", str(num_gpus),
                *self.opts]


def pipeline_stages(p: argparse.Namespace) -> List[Stage]:
    """Every stage, in order: [grounding,] teacher, its pseudo labels, the student, each later
    round's pseudo labels (by the round before's student) and student, [the oracle]."""
    stages = []
    if p.grounding_config:
        stages.append(Stage("grounding", "train", p.grounding_config, [*p.grounding_opts, "OUTPUT_DIR", p.grounding_dir],
                            p.grounding_dir, p.grounding_weights))
    stages.append(Stage("teacher", "train", p.teacher_config, [*p.teacher_train_opts, "OUTPUT_DIR", p.teacher_dir], p.teacher_dir,
                        p.teacher_weights))
    labeled = labeled_dataset(p.teacher_cfg)
    stages.append(Stage("pseudo labels", "label", p.teacher_config, [*p.teacher_opts, "MODEL.WEIGHTS", p.teacher_weights],
                        p.labels_dir, p.pseudo_labels, dataset=labeled))
    stages.append(Stage("student", "train", p.student_config, [*p.student_common, "OUTPUT_DIR", p.student_dir], p.student_dir,
                        os.path.join(p.student_dir, "model_final.pth")))
    for r in p.rounds:
        stages.append(Stage(f"pseudo labels round {r.number}", "label", p.student_config, r.label_opts, r.labels_dir, r.pseudo_labels,
                            dataset=labeled))
        stages.append(Stage(f"student round {r.number}", "train", p.student_config, [*r.student_common, "OUTPUT_DIR", r.student_dir],
                            r.student_dir, os.path.join(r.student_dir, "model_final.pth")))
    if p.oracle_dataset:
        stages.append(Stage("oracle", "train", p.student_config, [*p.oracle_opts, "OUTPUT_DIR", p.oracle_dir], p.oracle_dir,
                            os.path.join(p.oracle_dir, "model_final.pth"), after="teacher"))
    return stages


def later_rounds(output: str, rounds: int, round_init: str, student_opts: List[str], teacher_opts: List[str], teacher_weights: str,
                 first_student_weights: str) -> List[argparse.Namespace]:
    """Rounds 2..``rounds``: round k's pseudo labels come from round k-1's student (the student's
    config, with the labeling overrides given for the teacher), on the same weak-label dataset, and
    round k's student trains on them from the teacher's weights or round k-1's student's
    (``round_init``). Each round writes OUTPUT/round<k>/pseudo_labels and OUTPUT/round<k>/student."""
    labeling = pseudo_label_overrides(teacher_opts)
    result, previous = [], first_student_weights
    for number in range(2, rounds + 1):
        folder = os.path.join(output, f"round{number}")
        labels_dir, student_dir = os.path.join(folder, "pseudo_labels"), os.path.join(folder, "student")
        pseudo_labels = os.path.join(labels_dir, "pseudo_labels.json")
        start = teacher_weights if round_init == "teacher" else previous
        result.append(argparse.Namespace(
            number=number, labels_dir=labels_dir, pseudo_labels=pseudo_labels, student_dir=student_dir,
            label_opts=[*student_opts, *labeling, "MODEL.WEIGHTS", previous],
            student_common=[*student_opts, "MODEL.WEIGHTS", start, "XPM.PSEUDO_LABELS_FILE", pseudo_labels],
        ))
        previous = os.path.join(student_dir, "model_final.pth")
    return result


def pseudo_label_overrides(opts: List[str]) -> List[str]:
    """The XPM.PSEUDO_LABELS.* pairs of a KEY VALUE list (how every round labels)."""
    pairs = zip(opts[0::2], opts[1::2])
    return [item for key, value in pairs if key.startswith("XPM.PSEUDO_LABELS.") for item in (key, value)]


def all_class_dataset(cfg, given: Optional[str], required: bool = True) -> Optional[str]:
    """The training images annotated with every class (the oracle's data, and what pseudo labels
    are scored against): ``given``, else the ``*_train_all`` counterpart of a ``*_train_base``
    dataset in DATASETS.TRAIN (shapes, coco_ovis). None when there is none and not ``required``."""
    from detectron2.data import DatasetCatalog

    import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets

    registered = set(DatasetCatalog.list())
    if given:
        if given not in registered:
            raise SystemExit(f"error: --oracle-dataset {given}: no dataset of that name is registered (builtin or XPM.DATASET_FILES)")
        return given
    for name in cfg.DATASETS.TRAIN:
        if name.endswith("_train_base") and name[: -len("base")] + "all" in registered:
            return name[: -len("base")] + "all"
    if required:
        raise SystemExit(f"error: --oracle needs the training images annotated with every class; DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} "
                         "has no *_train_all counterpart, so give it with --oracle-dataset NAME")
    return None


def stage_commands(p: argparse.Namespace, args) -> List[Tuple[str, List[str], str]]:
    """(stage, command line, the file whose existence means the stage is done) of every stage, in order."""
    return [(s.name, s.command(args.num_gpus, args.num_shards), s.done) for s in pipeline_stages(p)]


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
    p = plan(args, prepare_data=not args.dry_run)
    if args.dry_run:
        return print_plan(p, args)
    for stage in pipeline_stages(p):
        if not os.path.exists(stage.done):
            run(stage.name, stage.command(args.num_gpus, args.num_shards))
    summary = summarise(p, args)
    print("\n" + summary_table(summary))
    print(f"\nwrote {os.path.join(p.output, 'summary.json')}")
    return 0


def evaluated_models(p: argparse.Namespace) -> List[Tuple[str, str, List[str], str]]:
    """(name in the summary, config, overrides, output folder) of every trained model evaluated."""
    models = [("teacher", p.teacher_config, p.teacher_opts, p.teacher_dir), ("student", p.student_config, p.student_common, p.student_dir)]
    models += [(f"student round {r.number}", p.student_config, r.student_common, r.student_dir) for r in p.rounds]
    if p.oracle_dataset:
        models.append(("oracle", p.student_config, p.oracle_opts, p.oracle_dir))
    return models


def summarise(p: argparse.Namespace, args) -> dict:
    """Every model evaluated on its DATASETS.TEST (evaluations a stopped run missed are run now),
    each round's pseudo labels scored against the all-class annotations of the labeled images;
    written to OUTPUT/summary.json."""
    from xpseudo.config import load_config

    train_net = os.path.join(REPO, "tools", "train_net.py")
    summary = {"config_dir": args.config_dir, "teacher_config": p.teacher_config, "student_config": p.student_config,
               "pseudo_labels": p.pseudo_labels, "rounds": args.rounds, "round_init": args.round_init, "results": {}}
    for role, cfg_file, opts, directory in evaluated_models(p):
        weights = os.path.join(directory, "model_final.pth")
        tests = list(load_config(cfg_file, opts).DATASETS.TEST)
        missing = [t for t in tests if t not in results_of(directory, tests)]
        if missing:  # training evaluates at its end; this covers a run stopped after saving
            run(f"evaluate {role}", [train_net, "--config-file", cfg_file, "--eval-only", "--num-gpus", str(args.num_gpus), *opts,
                                     "MODEL.WEIGHTS", weights, "OUTPUT_DIR", directory, "DATASETS.TEST", str(tuple(missing))])
        for dataset, result in results_of(directory, tests).items():
            summary["results"].setdefault(dataset, {})[role] = result
    with open(os.path.join(p.labels_dir, "provenance.json")) as f:
        summary["pseudo_label_counts"] = json.load(f)["counts"]
    label_files = [("round 1", p.pseudo_labels)] + [(f"round {r.number}", r.pseudo_labels) for r in p.rounds]
    if p.labels_gt_dataset:
        summary["pseudo_label_quality"] = {"ground_truth": p.labels_gt_dataset, **{
            name: pseudo_label_quality_against(path, p.labels_gt_dataset) for name, path in label_files}}
    atomic_write_json(os.path.join(p.output, "summary.json"), summary, indent=2)
    return summary


def pseudo_label_quality_against(labels: str, dataset: str) -> dict:
    """segm and bbox AP / AP50 / AP75 (all, base, novel) of a pseudo-label file against a
    registered dataset's annotations, on the images the file labels; kept beside the file
    (quality_<dataset>.json) while it is newer than both, so a rerun does not evaluate again."""
    from detectron2.data import MetadataCatalog

    from xpseudo.data.split import OvisSplit
    from xpseudo.evaluation.split_evaluation import evaluate_labels_on_their_images
    from xpseudo.utils.io import load_json

    metadata = MetadataCatalog.get(dataset)
    kept = os.path.join(os.path.dirname(labels), f"quality_{dataset}.json")
    if os.path.exists(kept) and os.path.getmtime(kept) >= max(os.path.getmtime(labels), os.path.getmtime(metadata.json_file)):
        return load_json(kept, "pseudo-label quality")
    split = OvisSplit(list(metadata.base_classes), list(metadata.novel_classes))
    quality = {task: evaluate_labels_on_their_images(labels, metadata.json_file, split, task) for task in ("segm", "bbox")}
    atomic_write_json(kept, quality, indent=2)
    return quality
