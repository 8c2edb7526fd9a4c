"""generate_clipes_labels.py's work: the CLIP model, the optional teacher, the prompt choice, then
xpseudo's shards and merge with the CLIP-ES labeler."""
import logging
import os

from xpseudo.utils.io import InputError

logger = logging.getLogger(__name__)

READABLE_KINDS = ("captions", "tags")  # CLIP-ES needs class names only


def build_labeler(cfg, dataset: str):
    """The CLIP-ES labeler the config describes; a teacher only when MODEL.WEIGHTS is set."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import xpseudo.modeling  # noqa: F401  registers the teacher

    from .clip_model import build_clip
    from .labeler import ClipesLabeler

    teacher = None
    if cfg.MODEL.WEIGHTS:
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise InputError(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS (the class-agnostic teacher) does not exist; leave it empty for no teacher")
        teacher = build_model(cfg)
        DetectionCheckpointer(teacher).load(cfg.MODEL.WEIGHTS)
        teacher.eval()
    c = cfg.CLIPES
    clip, tokenizer = build_clip(c.MODEL, c.PRETRAINED, c.MODEL_CONFIG_FILE, c.SEED, c.DEVICE)
    clip.xpseudo_name = f"{c.MODEL} ({c.PRETRAINED})"
    torch.set_grad_enabled(False)  # the GradCAM turns gradients on where it needs them
    return ClipesLabeler.from_config(cfg, clip, tokenizer, dataset, teacher)


def first_labeled_items(cfg, labeler, records, kind: str, count: int):
    """The first ``count`` images (in dataset order, so every shard chooses alike) whose labels
    name a wanted class, read as the shards read them."""
    from xpseudo.pseudo.generate import ShardImages

    items = []
    reader = ShardImages(records, labeler, cfg, kind)
    for i in range(len(records)):
        if len(items) >= count:
            break
        item = reader[i]
        if "image" in item:
            items.append(item)
    return items


def generate(args) -> None:
    import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
    from xpseudo.pseudo.cli import check_inputs, setup, write_shards
    from xpseudo.pseudo.generate import weak_label_kind

    from .config import add_clipes_config

    cfg = setup(args, add_clipes_config)
    dataset, records = check_inputs(cfg, args, require_weights=False)
    kind = weak_label_kind(dataset)
    if kind not in READABLE_KINDS:
        raise ValueError(f"CLIP-ES labels from class names ({READABLE_KINDS}); {dataset!r} has {kind}")
    labeler = build_labeler(cfg, dataset)
    labeler.choose_prompt(first_labeled_items(cfg, labeler, records, kind, cfg.CLIPES.PROMPT_IMAGES))
    write_shards(cfg, args, labeler, dataset, records)
