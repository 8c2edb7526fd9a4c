"""Small helpers shared by tests; none imports detectron2."""
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
requires_detectron2 = unittest.skipUnless(
    HAS_DETECTRON2, "detectron2 is not installed (install it from source, see README.md)"
)


def run_script(*args, check=True, env=None):
    """Run a repository script (path relative to the repo) with this Python; returns the result."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, args[0]), *map(str, args[1:])],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


SHAPES = ["circle", "square", "triangle", "hexagon", "ring", "star", "cross", "crescent"]


def write_shape_embeddings(path, dim=32, seed=0):
    """Random ``dim``-d "text embeddings" for the 8 shape classes: fast, and enough to test plumbing
    (configs then need MODEL.XPM.TEXT_EMBEDDINGS path and MODEL.XPM.EMBEDDING_DIM dim)."""
    import numpy as np

    from xpseudo.text import Vocabulary, save_text_embeddings

    rows = np.random.default_rng(seed).standard_normal((len(SHAPES), dim)).astype(np.float32)
    save_text_embeddings(str(path), rows, Vocabulary.from_names(SHAPES), model="test")
    return str(path)


def make_shapes(directory, seed=0, num_train=40, num_val=20, image_size=96):
    """A small shapes dataset written by the library (same code as datasets/prepare_shapes.py)."""
    from xpseudo.data.metadata_files import metadata_file
    from xpseudo.data.split import OvisSplit
    from xpseudo.data.synthetic_shapes import generate_shapes_dataset
    from xpseudo.text.vocabulary import Vocabulary

    return generate_shapes_dataset(
        str(directory), Vocabulary.from_file(metadata_file("shapes_vocabulary.json")),
        OvisSplit.from_file(metadata_file("shapes_split.json")),
        seed=seed, num_train=num_train, num_val=num_val, image_size=image_size,
    )


class RegisteredShapes:
    """unittest mixin: a small shapes dataset (``shapes_size`` images) registered as the builtin
    shapes_* datasets and 32-d class embeddings (``cls.embeddings``) for the whole class; the
    builtins are restored afterwards. detectron2 is imported only when the class is set up."""

    shapes_size = {"num_train": 8, "num_val": 2}

    @classmethod
    def setUpClass(cls):
        from xpseudo.data.builtin import register_all_builtin

        cls.tmp = tempfile.TemporaryDirectory()
        make_shapes(os.path.join(cls.tmp.name, "shapes"), image_size=96, **cls.shapes_size)
        register_all_builtin(cls.tmp.name)
        cls.embeddings = write_shape_embeddings(os.path.join(cls.tmp.name, "emb.npy"))

    @classmethod
    def tearDownClass(cls):
        from xpseudo.data.builtin import register_all_builtin

        register_all_builtin()
        cls.tmp.cleanup()


def write_custom_dataset_file(directory, seed=0):
    """A fresh shapes dataset in ``directory`` declared under the names configs/custom expects
    (custom_train_base, custom_train_captions, custom_val) in DIRECTORY/datasets.yaml, relative paths;
    returns that file's path. No Python registration: the tools read the file."""
    make_shapes(os.path.join(directory, "data"), seed=seed, num_train=8, num_val=4, image_size=96)
    path = os.path.join(directory, "datasets.yaml")
    with open(path, "w") as f:
        f.write(
            "datasets:\n"
            "  - {name: custom_train_base, kind: instances, image_root: data/images/train,\n"
            "     json: data/annotations/instances_train_base.json, split: data/split.json, vocabulary: data/vocabulary.json}\n"
            "  - {name: custom_train_captions, kind: captions, image_root: data/images/train,\n"
            "     json: data/annotations/captions_train.json, split: data/split.json, vocabulary: data/vocabulary.json}\n"
            "  - {name: custom_val, kind: instances, image_root: data/images/val,\n"
            "     json: data/annotations/instances_val.json, split: data/split.json, vocabulary: data/vocabulary.json}\n"
        )
    return path


def tiny_custom_opts(embeddings):
    """Overrides that shrink configs/custom (R-50 FPN at 800 px) to seconds on a CPU."""
    return [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "MODEL.XPM.TEXT_EMBEDDINGS", embeddings, "MODEL.XPM.EMBEDDING_DIM", "32",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    ]
