"""The pseudo-label report (tools/pseudo_label_report.py): what a user reads before training a
student on a pseudo-label file. Writes into one folder:

- ``metrics.json``: AP / AP50 / AP75 for all, base and novel classes (one COCOeval pass over the
  images the file covers) and per class the pseudo instances, how many are right at the IoU
  threshold, the ground-truth instances, precision and recall;
- ``confidence.png``: the confidence of right and of wrong pseudo instances;
- ``worst/``: the images with the most wrong plus missed instances, pseudo labels beside ground
  truth (detectron2's Visualizer; skipped, and said so, without detectron2 or --image-root);
- ``index.md``: the tables, linking the rest.
"""
import math
import os
from typing import Dict, List, Optional

import numpy as np

from xpseudo.data.split import OvisSplit
from xpseudo.utils.io import InputError, atomic_write, atomic_write_json, load_json, make_folder

from .pseudo_label_quality import ImageErrors, QualityReport, pseudo_label_quality
from .split_evaluation import check_detections, evaluate_by_split, load_coco_gt


def _fmt(value: float, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.1f}" if percent else f"{value:.1f}"


def load_pseudo_labels(path: str, coco_gt, iou_type: str, gt_name: str):
    """(checked detections, ids of the images the file covers, their file names where the file
    lists them): a COCO instances file with scores (what tools/generate_pseudo_labels.py writes)
    or a results list (covering its images only)."""
    data = load_json(path, "pseudo-label file")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        annotations, images = data["annotations"], data.get("images")
    elif isinstance(data, list):
        annotations, images = data, None
    else:
        raise InputError(path, "expected a COCO instances file with 'annotations' (or a results list)")
    detections = check_detections(annotations, coco_gt, iou_type, path, gt_name)
    if images is None:
        return detections, sorted({d["image_id"] for d in detections}), {}
    image_ids, file_names = [], {}
    for i, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image:
            raise InputError(path, f"images[{i}] has no 'id'")
        if image["id"] not in coco_gt.imgs:
            raise InputError(path, f"images[{i}]: id {image['id']} is not an image of {gt_name}")
        image_ids.append(image["id"])
        if "file_name" in image:
            file_names[image["id"]] = image["file_name"]
    return detections, sorted(set(image_ids)), file_names


def plot_confidence(quality: QualityReport, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    scores = np.concatenate([quality.scores_right, quality.scores_wrong])
    bins = np.linspace(min(0.0, float(scores.min())) if scores.size else 0.0, max(1.0, float(scores.max())) if scores.size else 1.0, 21)
    axes.hist([quality.scores_right, quality.scores_wrong], bins=bins, label=[f"right ({len(quality.scores_right)})", f"wrong ({len(quality.scores_wrong)})"],
              color=["tab:green", "tab:red"], alpha=0.8)
    axes.set_xlabel("pseudo-label confidence")
    axes.set_ylabel("instances")
    axes.set_title(f"right = ground truth of its class at IoU >= {quality.iou_threshold:g}")
    axes.legend()
    figure.tight_layout()
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


def draw_side_by_side(coco_gt, image: dict, file_name: str, pseudo: List[dict], iou_type: str, image_root: str, path: str) -> None:
    """Pseudo labels (left) and ground truth (right) on ``image_root/file_name``, masks or boxes as
    ``iou_type`` says, by detectron2's Visualizer."""
    import cv2
    from detectron2.utils.visualizer import Visualizer
    from pycocotools import mask as mask_util

    file = os.path.join(image_root, file_name)
    bgr = cv2.imread(file, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(file, "cannot be read as an image (is --image-root the labeled images' folder?)")
    rgb = bgr[:, :, ::-1]
    names = {c: coco_gt.cats[c]["name"] for c in coco_gt.cats}

    def draw(annotations: List[dict], with_score: bool) -> np.ndarray:
        labels = [names[a["category_id"]] + (f" {a['score']:.2f}" if with_score else "") for a in annotations]
        visualizer = Visualizer(rgb, scale=max(1.0, 256 / max(rgb.shape[:2])))
        if not annotations:
            return visualizer.get_output().get_image()
        if iou_type == "segm":
            return visualizer.overlay_instances(masks=[mask_util.decode(a["segmentation"]) for a in annotations], labels=labels).get_image()
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]
        return visualizer.overlay_instances(boxes=boxes, labels=labels).get_image()

    ground_truth = check_detections([{**a, "score": 1.0} for a in coco_gt.imgToAnns.get(image["id"], [])],
                                    coco_gt, iou_type, "ground truth", "ground truth")
    left, right = draw(pseudo, True), draw(ground_truth, False)
    gap = np.full((left.shape[0], 8, 3), 255, dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", np.concatenate([left, gap, right], axis=1)[:, :, ::-1])
    if not ok:
        raise RuntimeError(f"could not encode the drawing of image {image['id']}")
    with atomic_write(path, "wb") as f:
        f.write(encoded.tobytes())


def write_report(
    pseudo_path: str,
    gt_path: str,
    split_path: str,
    output: str,
    iou_type: str = "segm",
    iou_threshold: float = 0.5,
    num_worst: int = 8,
    image_root: Optional[str] = None,
) -> Dict:
    """Write the report into ``output``; returns what metrics.json holds. Every input is checked
    before anything is written, so a bad file leaves an earlier report as it was."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if num_worst < 0:
        raise ValueError(f"num_worst must be 0 or more, got {num_worst}")
    coco_gt = load_coco_gt(gt_path)
    split = OvisSplit.from_file(split_path)
    split.check_classes([c["name"] for c in coco_gt.dataset["categories"]], gt_path)
    detections, image_ids, file_names = load_pseudo_labels(pseudo_path, coco_gt, iou_type, gt_path)
    make_folder(output)

    ap = evaluate_by_split(coco_gt, detections, split, iou_type, img_ids=image_ids)
    quality = pseudo_label_quality(coco_gt, detections, image_ids, iou_type, iou_threshold)
    split_of = {name: which for which in ("base", "novel") for name in getattr(split, which)}
    per_class = {coco_gt.cats[c]["name"]: {**v, "split": split_of.get(coco_gt.cats[c]["name"], "")} for c, v in quality.per_class.items()}
    worst = quality.worst_images(num_worst)
    metrics = {
        "pseudo_labels": pseudo_path, "ground_truth": gt_path, "iou_type": iou_type, "iou_threshold": iou_threshold,
        "images": len(image_ids), "pseudo_instances": len(detections),
        "ap": {k: v for k, v in ap.items() if not k.startswith("AP-")},
        "per_class": per_class,
        "worst_images": [vars(e) for e in worst],
    }
    atomic_write_json(os.path.join(output, "metrics.json"), metrics, indent=2)
    plot_confidence(quality, os.path.join(output, "confidence.png"))
    drawn, why_not = _draw_worst(coco_gt, detections, file_names, worst, iou_type, image_root, os.path.join(output, "worst"))
    _write_index(os.path.join(output, "index.md"), metrics, drawn, why_not)
    return metrics


def _draw_worst(coco_gt, detections, file_names: Dict[int, str], worst: List[ImageErrors], iou_type: str, image_root: Optional[str], folder: str):
    if not worst:
        return [], "no image has a wrong or missed instance"
    if image_root is None:
        return [], "not drawn: give --image-root (the folder the pseudo labels' file names are relative to)"
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return [], "not drawn: detectron2 is not installed (its Visualizer draws them)"
    make_folder(folder)
    by_image: Dict[int, List[dict]] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    drawn = []
    for errors in worst:
        name = f"{errors.image_id}.png"
        image = coco_gt.imgs[errors.image_id]  # the pseudo file's name first: --image-root is its folder
        draw_side_by_side(coco_gt, image, file_names.get(errors.image_id, image["file_name"]), by_image.get(errors.image_id, []),
                          iou_type, image_root, os.path.join(folder, name))
        drawn.append((errors, os.path.join("worst", name)))
    return drawn, ""


def _write_index(path: str, metrics: Dict, drawn, why_not: str) -> None:
    ap = metrics["ap"]
    lines = [
        "# Pseudo-label report", "",
        f"`{metrics['pseudo_labels']}` against `{metrics['ground_truth']}` ({metrics['iou_type']}): "
        f"{metrics['pseudo_instances']} pseudo instances on {metrics['images']} images.", "",
        "| classes | AP | AP50 | AP75 |", "|---|---|---|---|",
    ]
    for which, suffix in (("all", ""), ("base", "_base"), ("novel", "_novel")):
        if "AP" + suffix in ap:
            lines.append(f"| {which} | " + " | ".join(_fmt(ap[m + suffix]) for m in ("AP", "AP50", "AP75")) + " |")
    lines += ["", f"Per class, at IoU >= {metrics['iou_threshold']:g} (precision = right / pseudo instances, recall = right / ground truth "
              "on the covered images):", "",
              "| class | split | pseudo | right | ground truth | precision % | recall % |", "|---|---|---|---|---|---|---|"]
    for name, v in metrics["per_class"].items():
        lines.append(f"| {name} | {v['split']} | {v['pseudo']} | {v['right']} | {v['ground_truth']} | "
                     f"{_fmt(v['precision'], True)} | {_fmt(v['recall'], True)} |")
    lines += ["", "Confidence of right and wrong pseudo instances:", "", "![confidence](confidence.png)", "",
              "## Images with the most errors", ""]
    if metrics["worst_images"]:
        lines += ["| image | right | wrong | missed |", "|---|---|---|---|"]
        links = {e.image_id: link for e, link in drawn}
        for e in metrics["worst_images"]:
            image = f"[{e['image_id']}]({links[e['image_id']]})" if e["image_id"] in links else str(e["image_id"])
            lines.append(f"| {image} | {e['right']} | {e['wrong']} | {e['missed']} |")
    if why_not:
        lines += ["", why_not.capitalize() + "."]
    lines += ["", "Each drawing: pseudo labels with their confidence (left), ground truth (right)." if drawn else ""]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
