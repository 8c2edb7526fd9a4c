"""Bad input and faults: a clear error naming the file and entry, no silently wrong AP, no hang, and
nothing already written lost. One test per fault; the detectron2 ones are at the end."""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import pycocotools.mask as mask_util

from tests.helpers import REPO, requires_detectron2, run_script
from xpseudo.utils.io import InputError

SIZE = 8


def rle(mask):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def square(x, y, side=3, size=SIZE):
    mask = np.zeros((size, size), np.uint8)
    mask[y:y + side, x:x + side] = 1
    return mask


def ground_truth():
    return {"images": [{"id": 1, "file_name": "1.png", "height": SIZE, "width": SIZE}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(square(0, 0)), "area": 9,
                             "bbox": [0, 0, 3, 3], "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle(square(4, 4)), "area": 9,
                             "bbox": [4, 4, 3, 3], "iscrowd": 0}]}


def detections():
    return [{"image_id": 1, "category_id": 1, "segmentation": rle(square(0, 0)), "bbox": [0, 0, 3, 3], "score": 0.9},
            {"image_id": 1, "category_id": 2, "segmentation": rle(square(4, 4)), "bbox": [4, 4, 3, 3], "score": 0.8}]


class FilesCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, data):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w") as f:
            json.dump(data, f)
        return path


class TestEvaluationRefusesWhatWouldChangeAP(FilesCase):
    """Rows 6-8: garbage RLE (a 10-minute COCOeval), masks of another size, unknown images or
    categories, string scores, images without a size."""

    def evaluate(self, gt, dt):
        from xpseudo.evaluation import evaluate_by_split, load_coco_gt, load_detections
        from xpseudo.data.split import OvisSplit

        coco = load_coco_gt(self.write("gt.json", gt))
        return evaluate_by_split(coco, load_detections(self.write("dt.json", dt), coco, "segm"), OvisSplit(["a"], ["b"]))

    def test_valid_files_score_100(self):
        self.assertAlmostEqual(self.evaluate(ground_truth(), detections())["AP50"], 100.0)

    def test_each_bad_detection_is_an_error_naming_the_entry(self):
        cases = {
            "counts": ("garbage!!", r"detection 0: RLE counts are not a compressed RLE string"),
            "size": ([SIZE, SIZE + 1], r"detection 0: RLE size \[8, 9\] is not the image's \[height, width\] \[8, 8\]"),
            "score": ("0.9", r"detection 0: 'score' must be a finite number, got '0.9'"),
            "nan score": (float("nan"), r"detection 0: 'score' must be a finite number"),
        }
        for what, (value, message) in cases.items():
            dt = detections()
            if what == "counts":
                dt[0]["segmentation"]["counts"] = value
            elif what == "size":
                dt[0]["segmentation"] = rle(np.zeros((SIZE, SIZE + 1)))
            else:
                dt[0]["score"] = value
            with self.subTest(what), self.assertRaisesRegex(InputError, r"dt\.json: " + message):
                self.evaluate(ground_truth(), dt)

    def test_each_bad_ground_truth_entry_is_an_error_naming_it(self):
        def without_height(gt):
            del gt["images"][0]["height"]

        def other_size(gt):
            gt["annotations"][1]["segmentation"] = rle(np.ones((SIZE + 2, SIZE)))

        def unknown_category(gt):
            gt["annotations"][1]["category_id"] = 9

        def unknown_image(gt):
            gt["annotations"][1]["image_id"] = 5

        cases = {without_height: r"images\[0\] \(id 1\) needs positive integer 'height' and 'width'",
                 other_size: r"annotations\[1\]: RLE size \[10, 8\] is not the image's",
                 unknown_category: r"annotations\[1\]: category_id 9 is not among the categories",
                 unknown_image: r"annotations\[1\]: image_id 5 is not among the images"}
        for change, message in cases.items():
            gt = ground_truth()
            change(gt)
            with self.subTest(change.__name__), self.assertRaisesRegex(InputError, r"gt\.json: " + message):
                self.evaluate(gt, detections())

    def test_the_tool_answers_in_one_line_at_once(self):
        dt = detections()
        dt[0]["segmentation"]["counts"] = "garbage!!"
        result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "evaluate_ovis.py"), "--gt", self.write("gt.json", ground_truth()),
                                 "--dt", self.write("dt.json", dt), "--split", self.write("split.json", {"base": ["a"], "novel": ["b"]})],
                                capture_output=True, text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stderr.strip().splitlines()[-1][:6], "error:")
        self.assertNotIn("Traceback", result.stderr)


class TestPseudoLabelReport(FilesCase):
    """Row 9: a report is written only from checked inputs; nonsense thresholds are refused."""

    def report(self, pseudo, output):
        from xpseudo.evaluation.pseudo_label_report import write_report

        return write_report(self.write("pl.json", pseudo), self.write("gt.json", ground_truth()),
                            self.write("split.json", {"base": ["a"], "novel": ["b"]}), output)

    def test_pseudo_rle_of_another_size_leaves_the_earlier_report(self):
        output = os.path.join(self.tmp.name, "report")
        good = {"images": ground_truth()["images"], "annotations": detections()}
        self.assertAlmostEqual(self.report(good, output)["ap"]["AP50"], 100.0)
        with open(os.path.join(output, "metrics.json")) as f:
            before = f.read()
        bad = {"images": ground_truth()["images"], "annotations": detections()}
        bad["annotations"][1]["segmentation"] = rle(np.zeros((SIZE, SIZE + 1)))
        with self.assertRaisesRegex(InputError, r"pl\.json: detection 1: RLE size \[8, 9\] is not the image's"):
            self.report(bad, output)
        with open(os.path.join(output, "metrics.json")) as f:
            self.assertEqual(f.read(), before)
        self.assertTrue(os.path.exists(os.path.join(output, "index.md")))

    def test_the_tool_refuses_thresholds_outside_their_range(self):
        common = ["--pseudo", "p.json", "--gt", "g.json", "--split", "s.json", "--output", "o"]
        for flag, value, message in [("--iou-threshold", "2", "an IoU threshold is in (0, 1], got 2"),
                                     ("--iou-threshold", "0", "an IoU threshold is in (0, 1], got 0"),
                                     ("--worst", "-3", "a count of images is 0 or more, got -3")]:
            with self.subTest(flag=flag, value=value):
                result = run_script("tools/pseudo_label_report.py", *common, flag, value, check=False)
                self.assertEqual(result.returncode, 2)
                self.assertIn(message, result.stderr)


class TestToolsReportFileSystemErrorsInOneLine(FilesCase):
    """Row 13: a folder that cannot be written (here: a path below a regular file, which fails for
    root too) or a missing input is one line naming the path, exit status 2, nothing lost."""

    def assert_one_line(self, result, line):
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(result.stderr.strip().splitlines()[-1], "error: " + line)

    def test_detectron2_free_tools(self):
        blocker = self.write("a_file", {})
        gt, split = self.write("gt.json", ground_truth()), self.write("split.json", {"base": ["a"], "novel": ["b"]})
        dt = self.write("dt.json", detections())
        below = os.path.join(blocker, "out.json")
        self.assert_one_line(run_script("tools/evaluate_ovis.py", "--gt", gt, "--dt", dt, "--split", split, "--json-out", below, check=False),
                             f"{blocker}: is a file, not a folder")
        report = os.path.join(blocker, "report")
        self.assert_one_line(run_script("tools/pseudo_label_report.py", "--pseudo", dt, "--gt", gt, "--split", split, "--output", report,
                                        check=False), f"{blocker}: is a file, so the folder {report} cannot be made")
        missing = os.path.join(self.tmp.name, "missing.json")
        result = run_script("tools/evaluate_ovis.py", "--gt", missing, "--dt", dt, "--split", split, check=False)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.strip().splitlines()[-1], f"error: {missing}: ground-truth file does not exist")
        self.assertNotIn("Traceback", result.stderr)
        debug = run_script("tools/evaluate_ovis.py", "--gt", gt, "--dt", dt, "--split", split, "--json-out", below, check=False,
                           env={"XPSEUDO_DEBUG": "1"})
        self.assertIn("Traceback", debug.stderr)


class TestInputFiles(FilesCase):
    def test_a_superscript_digit_in_a_caption_counts_as_a_word(self):
        """Row 3: '²'.isdigit() is True, int('²') fails."""
        from xpseudo.text import CaptionMatcher, Vocabulary
        from xpseudo.text.mention_counts import mention_count

        matcher = CaptionMatcher(Vocabulary.from_names(["star"]))
        words = matcher.words("a drawing with ² stars")
        (match,) = matcher.find("a drawing with ² stars")
        self.assertEqual(mention_count(words, match, ["star"], plural_count=2), 2)  # the plural, not a crash

    def test_captions_listing_an_image_twice_name_the_captions_file(self):
        """Row 2: found when the file is read, before any labeling."""
        from xpseudo.data.captions import load_coco_captions

        path = self.write("captions.json", {"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
                                            "annotations": [{"image_id": 1, "caption": "a star"}]})
        with self.assertRaisesRegex(InputError, r"captions\.json: images\[1\]: image id 1 is listed twice"):
            load_coco_captions(path)

    def test_weak_labels_with_a_nan_box_or_a_list_id(self):
        """Row 4."""
        from xpseudo.data.weak_labels import check_weak_label_file

        image = {"id": 1, "file_name": "a.png", "height": 10, "width": 10}
        nan_box = self.write("boxes.json", {"images": [image], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, float("nan"), 2]}]})
        with self.assertRaisesRegex(InputError, r"boxes\.json: annotations\[0\]: bbox must be \[x, y, width, height\] of finite numbers"):
            check_weak_label_file(nan_box, "boxes", [1])
        list_id = self.write("tags.json", {"images": [dict(image, id=[1], pos_category_ids=[1])]})
        with self.assertRaisesRegex(InputError, r"tags\.json: images\[0\]: 'id' must be an integer, got \[1\]"):
            check_weak_label_file(list_id, "tags", [1])

    def test_pseudo_labels_with_a_nan_box_are_refused(self):
        """Row 5: detectron2 would drop the instance without a word."""
        from xpseudo.pseudo.label_checks import annotation_problem

        ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(square(0, 0)), "bbox": [0, 0, float("nan"), 3]}
        self.assertIn("'bbox' must be 4 finite numbers", annotation_problem(ann)[0])

    def test_nan_text_embeddings_are_refused_when_loaded(self):
        """Row 11: not a FloatingPointError at iteration 0."""
        from xpseudo.text import Vocabulary, save_text_embeddings
        from xpseudo.text.embeddings import load_text_embeddings

        path = os.path.join(self.tmp.name, "e.npy")
        rows = np.ones((2, 4), np.float32)
        rows[1, 2] = np.nan
        save_text_embeddings(path, rows, Vocabulary.from_names(["cat", "dog"]), model="test")  # a valid sidecar
        with self.assertRaisesRegex(InputError, r"e\.npy: 1 rows hold NaN or infinite values \(classes \['dog'\]\)"):
            load_text_embeddings(path)

    def test_status_of_a_malformed_job_record(self):
        """Row 12."""
        for text in ("{not json", json.dumps({"stages": [{"stage": "teacher"}]})):
            with open(os.path.join(self.tmp.name, "slurm_jobs.json"), "w") as f:
                f.write(text)
            result = run_script("tools/run_pipeline.py", "--status", "--output", self.tmp.name, check=False)
            self.assertEqual(result.returncode, 2)
            self.assertRegex(result.stderr, r"^error: .*slurm_jobs\.json: ")
            self.assertNotIn("Traceback", result.stderr)


class TestMergeKeepsAGoodResult(FilesCase):
    def test_a_failed_merge_leaves_the_previous_file_index_and_provenance(self):
        """Row 1: the merge checks everything before it replaces anything."""
        from tests.test_pseudo_shards import header
        from xpseudo.pseudo import ShardWriter, merge_shards, shard_path

        def write(image_ids):
            path = shard_path(self.tmp.name, 0, 1)
            for stale in (path, path + ".partial"):
                if os.path.exists(stale):
                    os.remove(stale)
            writer = ShardWriter(path, header(len(image_ids), 1, 0))
            for image_id in image_ids:
                ann = {"image_id": image_id, "category_id": 3, "segmentation": rle(square(0, 0, size=4)), "bbox": [0, 0, 3, 3],
                       "area": 9, "iscrowd": 0, "score": 0.5, "word": "cat"}
                writer.add({"id": image_id, "file_name": f"{image_id}.png", "height": 4, "width": 4}, "labeled", [ann])
            writer.finish()

        write([2, 1])
        merge_shards(self.tmp.name)
        before = {name: open(os.path.join(self.tmp.name, name), "rb").read()
                  for name in ("pseudo_labels.json", "pseudo_labels.index", "provenance.json")}
        write([2, 2])  # an image listed twice
        with self.assertRaisesRegex(InputError, "image id 2 appears more than once"):
            merge_shards(self.tmp.name)
        for name, content in before.items():
            with open(os.path.join(self.tmp.name, name), "rb") as f:
                self.assertEqual(f.read(), content, name)


class TestConcurrentAndKilledWriters(FilesCase):
    def test_a_second_writer_of_a_shard_is_refused(self):
        """Row 16: two labeling runs on one output interleaved their lines."""
        from tests.test_pseudo_shards import header
        from xpseudo.pseudo import ShardWriter, shard_path

        path = shard_path(self.tmp.name, 0, 1)
        first = ShardWriter(path, header(2, 1, 0))
        with self.assertRaisesRegex(InputError, r"shard-00000-of-00001\.jsonl\.partial: another process is writing it"):
            ShardWriter(path, header(2, 1, 0))
        first.close()  # stopped (or killed: the kernel drops the lock): the next run resumes
        ShardWriter(path, header(2, 1, 0)).close()

    def test_a_killed_merge_leaves_nothing_behind_after_the_next(self):
        """Row 15: the spill folder and the half-written file of a merge killed with -9."""
        from tests.test_pseudo_shards import write_shards
        from xpseudo.pseudo import merge_shards

        write_shards(self.tmp.name, 6, 2)
        os.makedirs(os.path.join(self.tmp.name, ".merge.abc123", "spill"))
        with open(os.path.join(self.tmp.name, ".pseudo_labels.json.xyz.tmp"), "w") as f:
            f.write("x" * 1000)
        merge_shards(self.tmp.name)
        left = [n for n in os.listdir(self.tmp.name) if n.startswith(".") and n != ".merging.lock"]
        self.assertEqual(left, [])


@requires_detectron2
class TestModelInputs(unittest.TestCase):
    def test_background_weight_zero_on_background_only_is_zero_not_nan(self):
        """Row 18."""
        import torch
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.box_regression import Box2BoxTransform

        from xpseudo.modeling.open_vocab_predictor import OpenVocabOutputLayers

        layer = OpenVocabOutputLayers(ShapeSpec(channels=8), embedding_dim=4, temperature=0.1, background_weight=0.0,
                                      box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), test_score_thresh=0.05, test_nms_thresh=0.5, test_topk_per_image=10)
        scores = torch.randn(5, 3, requires_grad=True)
        loss = layer.classification_loss(scores, torch.full((5,), 2))
        self.assertEqual(float(loss), 0.0)
        loss.backward()
        self.assertTrue(bool(torch.isfinite(scores.grad).all()))

    def test_train_net_reports_a_bad_input_in_one_line(self):
        """Row 14 and row 10: the embeddings file of the wrong dimension is named."""
        from tests.helpers import write_shape_embeddings

        with tempfile.TemporaryDirectory() as tmp:
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"), dim=16)
            result = run_script("tools/train_net.py", "--config-file", "configs/shapes/xpm_teacher_R18_FPN.yaml", "MODEL.XPM.TEXT_EMBEDDINGS", emb,
                                "MODEL.XPM.EMBEDDING_DIM", "32", "OUTPUT_DIR", os.path.join(tmp, "out"), check=False)
            self.assertEqual(result.returncode, 2, result.stderr[-2000:])
            last = result.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"^error: .*emb\.npy: text embeddings for the training classes have dimension 16, the model expects")
            self.assertNotIn("Traceback", result.stderr)
            debug = run_script("tools/train_net.py", "--config-file", "configs/shapes/xpm_teacher_R18_FPN.yaml", "MODEL.XPM.TEXT_EMBEDDINGS", emb,
                               "MODEL.XPM.EMBEDDING_DIM", "32", "OUTPUT_DIR", os.path.join(tmp, "out"), check=False, env={"XPSEUDO_DEBUG": "1"})
            self.assertIn("Traceback", debug.stderr)


if __name__ == "__main__":
    unittest.main()
