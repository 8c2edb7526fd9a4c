"""detectron2 evaluator that reports COCO AP by base/novel split (needs detectron2)."""
import itertools
import os

from detectron2.evaluation import COCOEvaluator

from xpseudo.data.split import OvisSplit
from xpseudo.utils.io import atomic_write_json

from .split_evaluation import check_detections, evaluate_by_split, format_split_table


class OVISEvaluator(COCOEvaluator):
    """COCOEvaluator whose metrics come from ``evaluate_by_split``: the standard keys plus
    AP/AP50/AP75 ``_base`` and ``_novel``, over the dataset's own classes (so a constrained dataset
    is evaluated on its split only). Results go to ``<output_dir>/results.json``; pass
    ``OUTPUT_DIR/inference/<dataset>`` as ``output_dir``."""

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, **kwargs):
        super().__init__(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir, **kwargs)
        self._dataset_name = dataset_name
        self._split = OvisSplit.from_file(self._metadata.split_file)

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        contiguous_to_dataset = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
        for result in coco_results:
            result["category_id"] = contiguous_to_dataset[result["category_id"]]
        if self._output_dir:
            atomic_write_json(os.path.join(self._output_dir, "coco_instances_results.json"), coco_results)
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        cat_ids = sorted(contiguous_to_dataset.values())
        for task in sorted(tasks):
            detections = check_detections(coco_results, self._coco_api, task, "predictions", self._metadata.json_file)
            self._results[task] = evaluate_by_split(self._coco_api, detections, self._split, task, cat_ids, img_ids)
            self._logger.info(f"{self._dataset_name} by split:\n" + format_split_table(self._results[task], task))
        if self._output_dir:
            atomic_write_json(os.path.join(self._output_dir, "results.json"), self._results, indent=2)
