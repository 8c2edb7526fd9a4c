"""DefaultTrainer for XPM models: mixed caption batches, split-aware evaluation, the test
vocabulary switched to each test dataset's classes, and DistributedDataParallel on CPU as on GPU."""
import logging
import os
import weakref
from collections import OrderedDict

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import COCOEvaluator, LVISEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from xpseudo.data.xpm_loader import build_xpm_train_loader
from xpseudo.evaluation.lvis_compat import patch_numpy_for_lvis
from xpseudo.evaluation.ovis_evaluator import OVISEvaluator
from xpseudo.modeling.vocabulary import dataset_vocabulary

from .hooks import DropFrozenGradients
from .optimizer import build_clipped_optimizer

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


def build_ddp_model(model):
    """detectron2's DDP wrapper (a no-op for one process), with ``device_ids`` only for a CUDA
    model: DistributedDataParallel refuses them for CPU modules, which multi-process training on
    CPU machines (gloo) needs."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    device_ids = [comm.get_local_rank()] if on_cuda else None
    return create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)


class XPMTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, with the DDP model from build_ddp_model and DropFrozenGradients
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = build_ddp_model(model)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        # on the inner trainer: its run_step calls after_backward on its own hooks, not on ours
        self._trainer.register_hooks([DropFrozenGradients(model)])
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_clipped_optimizer(cfg, model)

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
