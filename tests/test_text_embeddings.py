import json
import os
import tempfile
import unittest

import numpy as np

from xpseudo.text import Vocabulary, build_text_encoder, compute_text_embeddings, load_text_embeddings, save_text_embeddings
from xpseudo.text.embeddings import class_prompts
from xpseudo.utils.io import InputError

from tests.helpers import run_script


class TestTextEmbeddings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A random-init RN50 text tower: no download, same weights for the same seed.
        cls.model, cls.tokenizer = build_text_encoder("RN50", None, seed=0)
        cls.vocabulary = Vocabulary.from_names(["circle", "star", "cross"], {"circle": ["disk", "disc"]})
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def embed(self, **kwargs):
        return compute_text_embeddings(self.vocabulary, self.model, self.tokenizer, **kwargs)

    def test_shape_norm_and_prompt_averaging(self):
        single = self.embed()
        self.assertEqual(single.shape, (3, 1024))
        self.assertEqual(single.dtype, np.float32)
        np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1, atol=1e-5)
        # The averaged circle row is the normalised mean of the three per-synonym prompts.
        averaged = self.embed(average_synonyms=True)
        np.testing.assert_allclose(averaged[1:], single[1:], atol=1e-6)
        per_name = [compute_text_embeddings(Vocabulary.from_names([n]), self.model, self.tokenizer)[0] for n in ("circle", "disk", "disc")]
        mean = np.mean(per_name, axis=0)
        np.testing.assert_allclose(averaged[0], mean / np.linalg.norm(mean), atol=1e-5)
        self.assertEqual(class_prompts(self.vocabulary[0], ["a {}.", "the {}"], True), ["a circle.", "the circle", "a disk.", "the disk", "a disc.", "the disc"])

    def test_seeded_random_init_is_reproducible(self):
        import torch

        torch.manual_seed(123)
        expected_next = torch.rand(3)
        torch.manual_seed(123)
        again = compute_text_embeddings(self.vocabulary, model_name="RN50", pretrained="none", seed=0)
        np.testing.assert_array_equal(again, self.embed())
        # building the seeded encoder leaves the caller's random stream where it was
        self.assertTrue(torch.equal(torch.rand(3), expected_next))

    def test_save_load_and_refuse_mismatch(self):
        path = os.path.join(self.tmp.name, "emb.npy")
        array = self.embed()
        save_text_embeddings(path, array, self.vocabulary, model="RN50", pretrained="none", prompts=["a photo of a {}."])
        loaded, sidecar = load_text_embeddings(path, expected_classes=["circle", "star", "cross"])
        np.testing.assert_array_equal(loaded, array)
        self.assertEqual(sidecar["classes"], ["circle", "star", "cross"])
        self.assertEqual((sidecar["dimension"], sidecar["model"], sidecar["ids"]), (1024, "RN50", [1, 2, 3]))
        with self.assertRaisesRegex(InputError, r"emb\.json: embeddings are for other classes: missing \['ring'\]"):
            load_text_embeddings(path, expected_classes=["circle", "star", "ring"])
        with self.assertRaisesRegex(InputError, "another order: position 0 is 'circle', expected 'star'"):
            load_text_embeddings(path, expected_classes=["star", "circle", "cross"])
        np.save(path, array * 2)
        with self.assertRaisesRegex(InputError, "checksum differs"):
            load_text_embeddings(path)

    def test_dump_tool(self):
        vocab_path = os.path.join(self.tmp.name, "vocab.json")
        with open(vocab_path, "w") as f:
            json.dump(self.vocabulary.to_json(), f)
        out = os.path.join(self.tmp.name, "tool.npy")
        run_script("tools/dump_text_embeddings.py", "--vocabulary", vocab_path, "--model", "RN50", "--pretrained", "none", "--output", out)
        array, sidecar = load_text_embeddings(out, expected_classes=self.vocabulary.names)
        np.testing.assert_allclose(array, self.embed(), atol=1e-6)
        self.assertEqual(sidecar["prompts"], ["a photo of a {}."])
        self.assertEqual(sidecar["pretrained"], "none")
