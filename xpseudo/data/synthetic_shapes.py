"""The synthetic captioned "shapes" dataset: filled shapes on a plain background, COCO annotations
with visible (occlusion-aware) RLE masks, and captions written the way people write them.

Every image is drawn from its own random stream seeded by (seed, split, index), so a dataset is
byte-identical for a seed and a larger dataset starts with the images of a smaller one.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_util

from xpseudo.text.inflection import plural_forms
from xpseudo.text.vocabulary import Vocabulary

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "orange": (245, 140, 20),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
    "cyan": (40, 210, 220),
    "pink": (245, 120, 180),
}
BACKGROUNDS = {"black": (15, 15, 15), "gray": (90, 90, 90), "dark blue": (20, 25, 70), "brown": (80, 55, 35)}
MIN_VISIBLE_FRACTION = 0.6  # an object hidden more than this by later ones is not placed
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
TEMPLATES = (
    "{objects}.",
    "a picture of {objects}.",
    "{objects} on a {background} background.",
    "in this image: {objects}.",
    "an image showing {objects}.",
    "{objects} drawn next to each other.",
    "a simple drawing with {objects}, nothing else.",
)


def _regular_polygon(n: int, radius: float, angle: float, start: float = np.pi / 2) -> np.ndarray:
    t = start + angle + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), -radius * np.sin(t)], axis=1)


def _star(radius: float, angle: float) -> np.ndarray:
    outer = _regular_polygon(5, radius, angle)
    inner = _regular_polygon(5, radius * 0.42, angle, start=np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(radius: float, angle: float) -> np.ndarray:
    a, b = radius, radius * 0.33
    pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]])
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, -s], [s, c]])


def _fill(mask: np.ndarray, centre: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    cv2.fillPoly(mask, [np.round(polygon + centre).astype(np.int32)], 1)
    return mask


def _disk(mask: np.ndarray, centre: np.ndarray, radius: float, value: int = 1) -> np.ndarray:
    cv2.circle(mask, tuple(int(round(v)) for v in centre), int(round(radius)), value, -1)
    return mask


def _ring(mask, centre, radius, angle):
    return _disk(_disk(mask, centre, radius), centre, radius * 0.55, 0)


def _crescent(mask, centre, radius, angle):
    offset = radius * 0.55 * np.array([np.cos(angle), np.sin(angle)])
    return _disk(_disk(mask, centre, radius), centre + offset, radius * 0.9, 0)


# name -> draw(mask, centre, radius, angle) filling the shape with 1s
DRAWERS: Dict[str, Callable] = {
    "circle": lambda m, c, r, a: _disk(m, c, r),
    "square": lambda m, c, r, a: _fill(m, c, _regular_polygon(4, r * 1.15, a, start=np.pi / 4)),
    "triangle": lambda m, c, r, a: _fill(m, c, _regular_polygon(3, r * 1.2, a)),
    "hexagon": lambda m, c, r, a: _fill(m, c, _regular_polygon(6, r * 1.05, a)),
    "ring": _ring,
    "star": lambda m, c, r, a: _fill(m, c, _star(r * 1.3, a)),
    "cross": lambda m, c, r, a: _fill(m, c, _cross(r * 1.1, a)),
    "crescent": _crescent,
}


@dataclass
class ShapeInstance:
    category_index: int
    colour: str
    mask: np.ndarray  # visible pixels, uint8 H x W


def render_image(rng: np.random.Generator, size: int, num_classes: int, names: Sequence[str], max_objects: int = 5):
    """(RGB image, background colour name, visible instances in drawing order)."""
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUNDS[background]
    instances: List[ShapeInstance] = []
    full_areas: List[int] = []
    wanted = int(rng.integers(1, max_objects + 1))
    for _ in range(wanted * 6):  # a few tries per object; crowded images simply get fewer
        if len(instances) == wanted:
            break
        index = int(rng.integers(num_classes))
        radius = rng.uniform(0.09, 0.2) * size
        centre = rng.uniform(radius, size - radius, size=2)
        mask = DRAWERS[names[index]](np.zeros((size, size), np.uint8), centre, radius, rng.uniform(0, 2 * np.pi))
        remaining = [int((inst.mask & (1 - mask)).sum()) for inst in instances]
        if mask.sum() < 20 or any(r < MIN_VISIBLE_FRACTION * a for r, a in zip(remaining, full_areas)):
            continue
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        for inst in instances:
            inst.mask &= 1 - mask
        image[mask.astype(bool)] = COLOURS[colour]
        instances.append(ShapeInstance(index, colour, mask))
        full_areas.append(int(mask.sum()))
    return image, background, instances


def _plural(phrase: str) -> str:
    words = phrase.split(" ")
    return " ".join(words[:-1] + [sorted(plural_forms(words[-1]))[0]])


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def write_caption(rng: np.random.Generator, vocabulary: Vocabulary, instances: Sequence[ShapeInstance], background: str) -> str:
    """One caption naming the image's classes with counts, colours and synonyms; sometimes one class
    present is left out, as people do."""
    present = sorted({inst.category_index for inst in instances})
    if len(present) > 1 and rng.random() < 0.2:
        present.pop(int(rng.integers(len(present))))
    rng.shuffle(present)
    phrases = []
    for index in present:
        category = vocabulary[index]
        word = category.name
        if category.synonyms and rng.random() < 0.35:
            word = category.synonyms[rng.integers(len(category.synonyms))]
        colours = [inst.colour for inst in instances if inst.category_index == index]
        if len(colours) > 1:
            count = NUMBER_WORDS.get(len(colours), "several")
            phrases.append(f"{count} {_plural(word)}")
        elif rng.random() < 0.6:
            phrases.append(_with_article(f"{colours[0]} {word}"))
        else:
            phrases.append(_with_article(word))
    objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(objects=objects, background=background)
    return caption[0].upper() + caption[1:]


def encode_instance(mask: np.ndarray) -> Tuple[dict, List[float], int]:
    """(compressed RLE with str counts, XYWH box, area) of a binary mask."""
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, [float(v) for v in mask_util.toBbox(rle)], int(mask_util.area(rle))


def click_point(rng: np.random.Generator, mask: np.ndarray) -> List[int]:
    """Where an annotator clicks an object: a pixel (x, y) of its visible mask, at random among those
    at least half as far from the edge as its most interior pixel (people click inside, not on the rim)."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(distance >= distance.max() / 2)
    k = int(rng.integers(len(xs)))
    return [int(xs[k]), int(ys[k])]


def draw_scribble(rng: np.random.Generator, mask: np.ndarray) -> List[List[float]]:
    """A short stroke an annotator draws on an object: a straight polyline [start, middle, end]
    through a random interior pixel (as ``click_point`` picks it) at a random angle, as long as it
    stays inside the object, up to 0.35 x sqrt(area) each way; vertices at pixel centres. An object
    too thin for a stroke gets one half a pixel long inside its interior pixel."""
    x, y = click_point(rng, mask)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    reach = 0.35 * np.sqrt(mask.sum())
    ends = []
    for sign in (1, -1):
        length = 0.0
        while length + 0.5 <= reach:
            px, py = np.array([x + 0.5, y + 0.5]) + sign * (length + 0.5) * direction
            if not (0 <= px < mask.shape[1] and 0 <= py < mask.shape[0] and mask[int(py), int(px)]):
                break
            length += 0.5
        ends.append(np.array([x + 0.5, y + 0.5]) + sign * max(length - 0.01, 0.25) * direction)  # 0.01 inside: rounding stays in
    centre = [x + 0.5, y + 0.5]
    return [[round(float(v), 2) for v in ends[1]], centre, [round(float(v), 2) for v in ends[0]]]


def _split_images(rng_seed: int, split_code: int, count: int, first_id: int, size: int, vocabulary: Vocabulary):
    """Yield (image dict, RGB pixels, background, instances, random stream) for one split."""
    names = vocabulary.names
    for i in range(count):
        rng = np.random.default_rng([rng_seed, split_code, i])
        pixels, background, instances = render_image(rng, size, len(names), names)
        image = {"id": first_id + i, "file_name": f"{first_id + i:06d}.png", "height": size, "width": size}
        yield image, pixels, background, instances, rng


def generate_shapes_dataset(output: str, vocabulary: Vocabulary, split, seed: int = 0, num_train: int = 1000, num_val: int = 200, image_size: int = 128, progress: bool = False) -> Dict[str, int]:
    """Write the shapes dataset under ``output`` (layout in datasets/README.md); returns counts."""
    import os

    from tqdm import tqdm

    from xpseudo.utils.io import atomic_write_json

    missing = sorted(set(vocabulary.names) - set(DRAWERS))
    if missing:
        raise ValueError(f"{vocabulary.source}: no drawing for classes {missing}; known shapes: {sorted(DRAWERS)}")
    split.check_classes(vocabulary.names, vocabulary.source)
    base_ids = {vocabulary[i].id for i in split.class_ids(vocabulary.names, "base")}
    categories = [{"id": c.id, "name": c.name, "supercategory": "shape"} for c in vocabulary]
    counts = {}
    for split_name, split_code, count, first_id in (("train", 0, num_train, 1), ("val", 1, num_val, 100001)):
        image_dir = os.path.join(output, "images", split_name)
        os.makedirs(image_dir, exist_ok=True)
        images, annotations, captions, clicks, strokes = [], [], [], {}, {}
        rows = _split_images(seed, split_code, count, first_id, image_size, vocabulary)
        for image, pixels, background, instances, rng in tqdm(rows, total=count, desc=split_name, disable=not progress):
            cv2.imwrite(os.path.join(image_dir, image["file_name"]), pixels[:, :, ::-1])
            images.append(image)
            # clicks from their own stream, so the captions below stay those of earlier versions
            click_rng = np.random.default_rng([seed, split_code, image["id"], 1])
            stroke_rng = np.random.default_rng([seed, split_code, image["id"], 2])
            for inst in instances:
                rle, box, area = encode_instance(inst.mask)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image["id"], "category_id": vocabulary[inst.category_index].id,
                    "segmentation": rle, "bbox": box, "area": area, "iscrowd": 0,
                })
                clicks[annotations[-1]["id"]] = click_point(click_rng, inst.mask)
                strokes[annotations[-1]["id"]] = draw_scribble(stroke_rng, inst.mask)
            for _ in range(int(rng.integers(1, 4))):
                captions.append({"id": len(captions) + 1, "image_id": image["id"], "caption": write_caption(rng, vocabulary, instances, background)})
        annotation_dir = os.path.join(output, "annotations")
        if split_name == "val":
            atomic_write_json(os.path.join(annotation_dir, "instances_val.json"), {"images": images, "annotations": annotations, "categories": categories})
            counts.update(val_images=len(images), val_instances=len(annotations))
            continue
        atomic_write_json(os.path.join(annotation_dir, "instances_train_all.json"), {"images": images, "annotations": annotations, "categories": categories})
        base_annotations = [a for a in annotations if a["category_id"] in base_ids]
        base_images = {a["image_id"] for a in base_annotations}
        atomic_write_json(
            os.path.join(annotation_dir, "instances_train_base.json"),
            {"images": [im for im in images if im["id"] in base_images], "annotations": base_annotations, "categories": categories},
        )
        atomic_write_json(os.path.join(annotation_dir, "captions_train.json"), {"images": images, "annotations": captions})
        # the weak-label forms of the same images, novel classes only (as the captions are used:
        # base masks are ground truth, novel objects are only named): image tags (Detic's
        # pos_category_ids), boxes without masks, one click per object (PointSup's fields), one
        # stroke per object
        novel = [a for a in annotations if a["category_id"] not in base_ids]
        tags = {}
        for a in novel:
            tags.setdefault(a["image_id"], {})[a["category_id"]] = None
        tag_images = [{**im, "pos_category_ids": list(tags.get(im["id"], ()))} for im in images]
        atomic_write_json(os.path.join(annotation_dir, "tags_train.json"), {"images": tag_images, "annotations": [], "categories": categories})
        boxes = [{k: a[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd")} for a in novel]
        atomic_write_json(os.path.join(annotation_dir, "boxes_train.json"), {"images": images, "annotations": boxes, "categories": categories})
        points = [{**{k: a[k] for k in ("id", "image_id", "category_id", "iscrowd")}, "point_coords": [clicks[a["id"]]], "point_labels": [1]}
                  for a in novel]
        atomic_write_json(os.path.join(annotation_dir, "points_train.json"), {"images": images, "annotations": points, "categories": categories})
        scribbles = [{**{k: a[k] for k in ("id", "image_id", "category_id", "iscrowd")}, "scribble": strokes[a["id"]]} for a in novel]
        atomic_write_json(os.path.join(annotation_dir, "scribbles_train.json"), {"images": images, "annotations": scribbles, "categories": categories})
        counts.update(train_images=len(images), train_instances=len(annotations), train_base_images=len(base_images), train_base_instances=len(base_annotations),
                      train_captions=len(captions), train_novel_boxes=len(boxes), train_tagged_images=len(tags))
    atomic_write_json(os.path.join(output, "split.json"), split.to_json(), indent=2)
    atomic_write_json(os.path.join(output, "vocabulary.json"), vocabulary.to_json(), indent=2)
    return counts
