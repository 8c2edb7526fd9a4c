"""The data gate before iteration 0: masks and boxes of the training set are checked before the
loader starts, and an image that cannot be decoded is skipped with its name logged."""
import copy
import json
import os
import tempfile
import unittest

import numpy as np

from tests.helpers import make_shapes, requires_detectron2, write_shape_embeddings
from xpseudo.utils.io import InputError

CONFIG = "configs/shapes/xpm_teacher_R18_FPN.yaml"


@requires_detectron2
class TestTrainingGate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = os.path.join(cls.tmp.name, "shapes")
        make_shapes(cls.root, num_train=6, num_val=1, image_size=64)
        with open(os.path.join(cls.root, "annotations", "instances_train_base.json")) as f:
            cls.instances = json.load(f)
        cls.embeddings = write_shape_embeddings(os.path.join(cls.tmp.name, "emb.npy"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def loader(self, name, instances):
        from xpseudo.config import load_config
        from xpseudo.data.ovis_datasets import register_ovis_dataset
        from xpseudo.data.xpm_loader import build_xpm_train_loader

        path = os.path.join(self.tmp.name, f"{name}.json")
        with open(path, "w") as f:
            json.dump(instances, f)
        register_ovis_dataset(name, image_root=os.path.join(self.root, "images", "train"), split_file=os.path.join(self.root, "split.json"),
                              instances_json=path, replace=True)
        cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), CONFIG),
                          ["DATASETS.TRAIN", f"('{name}',)", "MODEL.XPM.GROUNDING.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0",
                           "SOLVER.IMS_PER_BATCH", "2", "MODEL.XPM.TEXT_EMBEDDINGS", self.embeddings, "MODEL.XPM.EMBEDDING_DIM", "32"])
        return path, build_xpm_train_loader(cfg)

    def test_a_mask_of_another_size_is_refused_before_the_first_batch(self):
        import pycocotools.mask as mask_util

        instances = copy.deepcopy(self.instances)
        annotation = instances["annotations"][3]
        image = next(i for i in instances["images"] if i["id"] == annotation["image_id"])
        encoded = mask_util.encode(np.asfortranarray(np.ones((image["height"] + 1, image["width"]), np.uint8)))
        annotation["segmentation"] = {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}
        index = [a for a in instances["annotations"] if a["image_id"] == image["id"]].index(annotation)
        with self.assertRaises(InputError) as caught:
            self.loader("gate_wrong_size", instances)
        self.assertRegex(str(caught.exception), rf"gate_wrong_size\.json: image .*{image['file_name']} \(id {image['id']}\), "
                                                rf"annotation {index}: RLE size \[{image['height'] + 1}, {image['width']}\] is not the image's")

    def test_an_undecodable_image_is_skipped_and_named(self):
        instances = copy.deepcopy(self.instances)
        broken = instances["images"][0]
        broken_copy = os.path.join(self.root, "images", "train", "broken.png")
        with open(broken_copy, "wb") as f:
            f.write(b"not an image at all")
        broken["file_name"] = "broken.png"
        _, loader = self.loader("gate_undecodable", instances)
        seen = set()
        with self.assertLogs("xpseudo.data.training_gate", "WARNING") as logs:
            batches = iter(loader)
            for _ in range(12):  # 24 draws: TrainingSampler walks whole permutations of the 6, so the broken one is drawn
                seen.update(d["file_name"] for d in next(batches))
        self.assertNotIn(broken_copy, seen)
        self.assertEqual(len(seen), len(instances["images"]) - 1)
        self.assertIn(f"skipped {broken_copy}: the image cannot be decoded", "\n".join(logs.output))


if __name__ == "__main__":
    unittest.main()
