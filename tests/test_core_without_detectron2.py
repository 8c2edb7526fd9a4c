import subprocess
import sys
import unittest

CORE_MODULES = [
    "xpseudo", "xpseudo.text", "xpseudo.evaluation", "xpseudo.data", "xpseudo.data.split",
    "xpseudo.data.captions", "xpseudo.data.synthetic_shapes", "xpseudo.utils", "xpseudo.losses",
    "xpseudo.text.embedding_cache", "xpseudo.text.caption_words", "xpseudo.pseudo", "xpseudo.pseudo.selection",
    "xpseudo.pseudo.shards", "xpseudo.pseudo.annotations", "xpseudo.pseudo.label_index", "xpseudo.pseudo.index_from_json",
    "xpseudo.pseudo.label_checks", "xpseudo.utils.json_stream", "xpseudo.losses.noise_aware", "xpseudo.losses.pseudo_mask", "xpseudo.losses.prototype_contrast", "xpseudo.slurm",
    "xpseudo.slurm.jobs", "xpseudo.slurm.pipeline_jobs", "xpseudo.data.image_files", "xpseudo.data.openimages",
    "xpseudo.data.conceptual_captions", "xpseudo.evaluation.lvis_compat", "xpseudo.evaluation.lvis_evaluation",
    "xpseudo.slurm.partition", "xpseudo.slurm.status", "xpseudo.utils.distributed", "xpseudo.pseudo.cli", "xpseudo.pipeline",
    "xpseudo.evaluation.pseudo_label_quality", "xpseudo.evaluation.pseudo_label_report", "xpseudo.evaluation.weight_diagnostics",
    "xpseudo.evaluation.student_weight_report", "xpseudo.data.weak_labels", "xpseudo.text.mention_counts",
    "xpseudo.data.dataset_files", "xpseudo.predict", "xpseudo.predict.inputs",
    "clipes", "clipes.affinity", "clipes.grad_cam", "clipes.instances", "clipes.clip_model",
]


class TestCoreWithoutDetectron2(unittest.TestCase):
    def test_core_modules_do_not_import_detectron2(self):
        # A fresh interpreter: tests that need detectron2 may have imported it into this one.
        code = "import sys\n" + "".join(f"import {m}\n" for m in CORE_MODULES) + (
            "print(any(v is not None and n.split('.')[0] == 'detectron2' for n, v in sys.modules.items()))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.strip(), "False")

    def test_core_imports_with_detectron2_hidden(self):
        # Simulate a machine without detectron2: a meta-path finder that refuses it.
        code = (
            "import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'detectron2' or name.startswith('detectron2.'):\n"
            "            raise ImportError('detectron2 hidden')\n"
            "sys.meta_path.insert(0, Block())\n" + "".join(f"import {m}\n" for m in CORE_MODULES) + "print('ok')"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(result.stdout.strip(), "ok", result.stderr)
