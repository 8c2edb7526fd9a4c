import json
import os
import tempfile
import unittest

import numpy as np
import pycocotools.mask as mask_util

from xpseudo.pseudo import ShardWriter, encode_pseudo_annotations, iter_shard, merge_shards, shard_bounds, shard_path
from xpseudo.utils.io import InputError

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def provenance(num_images, num_shards, **changes):
    return {"teacher_sha256": "abc", "dataset": "toy", "num_images": num_images, "categories": CATEGORIES,
            "num_shards": num_shards, **changes}


def header(num_images, num_shards, index, **changes):
    start, end = shard_bounds(num_images, num_shards, index)
    return {"provenance": provenance(num_images, num_shards, **changes),
            "shard": {"index": index, "count": num_shards, "start": start, "end": end}}


def fake_annotations(image_id):
    """A deterministic stand-in for the labeler's output on one image: image_id % 3 masks."""
    return [{"image_id": image_id, "category_id": 3 if k % 2 else 7, "segmentation": {"size": [4, 4], "counts": "01?"},
             "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0, "score": 0.5 + k / 10, "word": "dogs"} for k in range(image_id % 3)]


def write_shards(directory, num_images, num_shards, stop_after=None):
    """Write every shard like the tool does; stop_after=(shard, images) simulates a kill."""
    for index in range(num_shards):
        if os.path.exists(shard_path(directory, index, num_shards)):
            continue  # finished: skipped, as the tool does
        writer = ShardWriter(shard_path(directory, index, num_shards), header(num_images, num_shards, index))
        start, end = shard_bounds(num_images, num_shards, index)
        for image_id in range(start, end):
            if image_id in writer.done:
                continue
            if stop_after and stop_after[0] == index and len(writer.done) == stop_after[1]:
                writer.close()
                return
            annotations = fake_annotations(image_id)
            status = "labeled" if annotations else ("no_match" if image_id % 5 else "unreadable")
            writer.add({"id": image_id, "file_name": f"{image_id}.jpg", "height": 4, "width": 4}, status, annotations)
        writer.finish()


class TestShardBounds(unittest.TestCase):
    def test_contiguous_balanced_slices(self):
        self.assertEqual([shard_bounds(10, 3, i) for i in range(3)], [(0, 4), (4, 7), (7, 10)])
        self.assertEqual(shard_bounds(5, 1, 0), (0, 5))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "4 shards for 3 images"):
            shard_bounds(3, 4, 0)
        with self.assertRaisesRegex(ValueError, "shard index 3 is outside 0..2"):
            shard_bounds(9, 3, 3)
        with self.assertRaisesRegex(ValueError, "must be >= 1"):
            shard_bounds(9, 0, 0)


class TestShardsAndMerge(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def merged(self, directory, num_shards=None):
        provenance = merge_shards(directory, num_shards)
        with open(os.path.join(directory, "pseudo_labels.json")) as f:
            return json.load(f), provenance

    def test_three_shards_merge_to_the_single_shard_output(self):
        one, three = os.path.join(self.dir, "one"), os.path.join(self.dir, "three")
        write_shards(one, 11, 1)
        write_shards(three, 11, 3)
        (a, pa), (b, pb) = self.merged(one), self.merged(three)
        self.assertEqual(a["annotations"], b["annotations"])
        self.assertEqual(a["images"], b["images"])
        self.assertEqual(a["categories"], CATEGORIES)
        labeled = [i for i in range(11) if i % 3]
        self.assertEqual([im["id"] for im in a["images"]], labeled)
        self.assertEqual([x["id"] for x in a["annotations"]], list(range(1, len(a["annotations"]) + 1)))
        self.assertEqual([x["image_id"] for x in a["annotations"]], [i for i in labeled for _ in range(i % 3)])
        self.assertEqual(pa["counts"], pb["counts"])
        self.assertEqual(pb["counts"], {"images": 11, "labeled": 7, "unlabeled": 0, "no_match": 3, "unreadable": 1,
                                        "annotations": 10, "empty_masks": 0, "skipped_labels": 0})
        self.assertEqual(len(pb["shards"]), 3)
        with open(os.path.join(three, "provenance.json")) as f:
            self.assertEqual(json.load(f)["teacher_sha256"], "abc")

    def test_killed_shard_resumes_without_loss_or_duplicates(self):
        reference = os.path.join(self.dir, "reference")
        write_shards(reference, 11, 3)
        killed = os.path.join(self.dir, "killed")
        write_shards(killed, 11, 3, stop_after=(1, 2))  # shard 0 finished, shard 1 after 2 images
        partial = shard_path(killed, 1, 3) + ".partial"
        with open(partial, "ab") as f:
            f.write(b'{"annotation": {"image_id": 6, "categ')  # a block torn by the kill
        with self.assertRaisesRegex(InputError, r"missing shards \[1, 2\] of 3 \(interrupted, rerun them: \[1\]\)"):
            merge_shards(killed, 3)
        self.assertFalse(os.path.exists(os.path.join(killed, "pseudo_labels.json")))
        write_shards(killed, 11, 3)  # the rerun
        self.assertFalse(os.path.exists(partial))
        lines = list(iter_shard(shard_path(killed, 1, 3)))
        self.assertEqual([x["image"]["id"] for x in lines if "image" in x], [4, 5, 6, 7])
        self.assertEqual(self.merged(killed)[0], self.merged(reference)[0])

    def test_partial_from_other_settings_is_started_over(self):
        path = shard_path(self.dir, 0, 1)
        writer = ShardWriter(path, header(3, 1, 0, teacher_sha256="old"))
        writer.add({"id": 0, "file_name": "0.jpg", "height": 4, "width": 4}, "no_match", [])
        writer.close()
        self.assertEqual(ShardWriter(path, header(3, 1, 0)).done, {})

    def test_merge_refuses_foreign_and_missing_shards(self):
        write_shards(self.dir, 6, 2)
        foreign = shard_path(self.dir, 1, 2)
        os.remove(foreign)
        with self.assertRaisesRegex(InputError, r"missing shards \[1\] of 2; nothing was merged"):
            merge_shards(self.dir)
        writer = ShardWriter(foreign, header(6, 2, 1, teacher_sha256="other"))
        writer.add({"id": 3, "file_name": "3.jpg", "height": 4, "width": 4}, "no_match", [])
        writer.finish()
        with self.assertRaisesRegex(InputError, r"shard-00001-of-00002.jsonl: foreign shard: its \['teacher_sha256'\] differ"):
            merge_shards(self.dir)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "pseudo_labels.json")))
        write_shards(os.path.join(self.dir, "x"), 6, 3)
        with self.assertRaisesRegex(InputError, "no finished shard"):
            merge_shards(os.path.join(self.dir, "nothing"))

    def test_a_failed_merge_keeps_the_previous_output(self):
        write_shards(self.dir, 6, 2)
        before, _ = self.merged(self.dir)
        os.remove(shard_path(self.dir, 0, 2))
        with self.assertRaises(InputError):
            merge_shards(self.dir, 2)
        self.assertEqual(self.merged_file(), before)

    def test_merge_reads_each_shard_once_and_a_corrupt_line_keeps_the_previous_output(self):
        from unittest import mock

        import xpseudo.pseudo.shards as shards

        write_shards(self.dir, 11, 3)
        with mock.patch.object(shards, "iter_shard", wraps=shards.iter_shard) as reads:
            before, _ = self.merged(self.dir)
        self.assertEqual(sorted(c.args[0] for c in reads.call_args_list), [shard_path(self.dir, i, 3) for i in range(3)])
        # a line broken in the middle of a shard (header and footer intact) is found by the one pass
        path = shard_path(self.dir, 1, 3)
        with open(path) as f:
            lines = f.readlines()
        lines[2] = lines[2][: len(lines[2]) // 2] + "\n"
        with open(path, "w") as f:
            f.writelines(lines)
        with self.assertRaisesRegex(InputError, r"shard-00001-of-00003\.jsonl: line 3 is not JSON"):
            merge_shards(self.dir, 3)
        self.assertEqual(self.merged_file(), before)
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith(".")], [])  # no spill or temp file left

    def test_merge_writes_the_index_of_its_output(self):
        from xpseudo.pseudo.index_from_json import build_index_from_json
        from xpseudo.pseudo.label_index import PseudoLabelIndex, index_path, is_fresh

        write_shards(self.dir, 11, 3)
        merged, _ = self.merged(self.dir)
        output = os.path.join(self.dir, "pseudo_labels.json")
        self.assertTrue(is_fresh(index_path(output), output))
        index = PseudoLabelIndex(index_path(output), output)
        self.assertIsNone(index.images_checked_under)
        self.assertEqual(index.image_ids().tolist(), [im["id"] for im in merged["images"]])
        for i, image in enumerate(merged["images"]):
            self.assertEqual(index.entries(i), (image, [a for a in merged["annotations"] if a["image_id"] == image["id"]]))
        # the same index as one built by streaming the merged file
        rebuilt = PseudoLabelIndex(build_index_from_json(output, os.path.join(self.dir, "rebuilt.index")), output)
        def absolute(i):  # annotation offsets count from where the merge put the annotations
            return {**{k: v.tolist() for k, v in i.columns.items()}, "annotation_start": (i.columns["annotation_start"] + i.annotations_base).tolist()}

        self.assertEqual(absolute(rebuilt), absolute(index))

    def test_merge_checks_entries_and_images(self):
        write_shards(self.dir, 11, 3)
        images = os.path.join(self.dir, "images")
        os.makedirs(images)
        for i in range(11):
            open(os.path.join(images, f"{i}.jpg"), "wb").close()
        merge_shards(self.dir, 3, image_root=images)
        from xpseudo.pseudo.label_index import PseudoLabelIndex, index_path

        output = os.path.join(self.dir, "pseudo_labels.json")
        self.assertEqual(PseudoLabelIndex(index_path(output), output).images_checked_under, images)
        before = self.merged_file()
        os.remove(os.path.join(images, "5.jpg"))
        with self.assertRaisesRegex(InputError, r"pseudo_labels.json: images\[3\] \(id 5\): image file .*5.jpg does not exist"):
            merge_shards(self.dir, 3, image_root=images)
        # an annotation the student could not decode names the shard and line
        path = shard_path(self.dir, 1, 3)
        with open(path) as f:
            lines = f.readlines()
        line = json.loads(lines[1])
        line["annotation"]["segmentation"]["size"] = [5, 4]
        lines[1] = json.dumps(line) + "\n"
        with open(path, "w") as f:
            f.writelines(lines)
        with self.assertRaisesRegex(InputError, r"shard-00001-of-00003\.jsonl: line 2: .*size \[4, 4\] of its image, got \[5, 4\]"):
            merge_shards(self.dir, 3)
        self.assertEqual(self.merged_file(), before)

    def merged_file(self):
        with open(os.path.join(self.dir, "pseudo_labels.json")) as f:
            return json.load(f)


class TestEncodePseudoAnnotations(unittest.TestCase):
    def test_rle_box_area_and_empty_masks_dropped(self):
        masks = np.zeros((3, 6, 8), dtype=bool)
        masks[0, 1:4, 2:7] = True
        masks[2, 5, 0] = True
        annotations, dropped = encode_pseudo_annotations(9, masks, [3, 7, 7], [0.75, 0.5, 0.25], ["cat", "dog", "puppy"])
        self.assertEqual(dropped, 1)
        self.assertEqual([a["word"] for a in annotations], ["cat", "puppy"])
        first = annotations[0]
        self.assertEqual(first["bbox"], [2.0, 1.0, 5.0, 3.0])
        self.assertEqual(first["area"], 15)
        self.assertEqual((first["image_id"], first["category_id"], first["score"], first["iscrowd"]), (9, 3, 0.75, 0))
        decoded = mask_util.decode({"size": first["segmentation"]["size"], "counts": first["segmentation"]["counts"].encode()})
        self.assertTrue(np.array_equal(decoded.astype(bool), masks[0]))
        json.dumps(annotations)  # plain JSON types
        self.assertEqual(encode_pseudo_annotations(1, np.zeros((0, 6, 8), bool), [], [], []), ([], 0))


if __name__ == "__main__":
    unittest.main()
