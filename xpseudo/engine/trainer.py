"""DefaultTrainer for XPM models: mixed caption batches, split-aware evaluation, and the test
vocabulary switched to each test dataset's classes."""
import os
from collections import OrderedDict

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, LVISEvaluator

from xpseudo.data.xpm_loader import build_xpm_train_loader
from xpseudo.evaluation.lvis_compat import patch_numpy_for_lvis
from xpseudo.evaluation.ovis_evaluator import OVISEvaluator
from xpseudo.modeling.vocabulary import dataset_vocabulary

def lvis_evaluator(name, output_dir, tasks):
    patch_numpy_for_lvis()
    return LVISEvaluator(name, tasks=tasks, output_dir=output_dir)


# evaluator_type -> factory(dataset_name, output_dir, tasks)
EVALUATORS = {
    "ovis": lambda name, output_dir, tasks: OVISEvaluator(name, tasks=tasks, output_dir=output_dir),
    "coco": lambda name, output_dir, tasks: COCOEvaluator(name, tasks=tasks, output_dir=output_dir),
    "lvis": lvis_evaluator,
}


def unwrap(model):
    return model.module if hasattr(model, "module") else model


class XPMTrainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return build_xpm_train_loader(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if evaluator_type not in EVALUATORS:
            raise NotImplementedError(f"no evaluator for {dataset_name} (evaluator_type {evaluator_type!r}); known: {sorted(EVALUATORS)}")
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return EVALUATORS[evaluator_type](dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name), tasks)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate each test dataset with its own classes (generalized, constrained or custom),
        then restore the training classes."""
        core = unwrap(model)
        previous = getattr(core, "vocabulary", None)
        results = OrderedDict()
        try:
            for index, name in enumerate(cfg.DATASETS.TEST):
                if hasattr(core, "set_vocabulary"):
                    core.set_vocabulary(dataset_vocabulary(name), name)
                one = cfg.clone()
                one.defrost()
                one.DATASETS.TEST = (name,)
                results[name] = super().test(one, model, None if evaluators is None else [evaluators[index]])
        finally:
            if previous is not None:
                core.set_vocabulary(previous)
        return results if len(results) != 1 else next(iter(results.values()))
