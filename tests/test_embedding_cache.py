import os
import tempfile
import unittest

import numpy as np

from xpseudo.text import Vocabulary, save_text_embeddings
from xpseudo.text.embedding_cache import ClassEmbeddingProvider
from xpseudo.utils.io import InputError


class TestClassEmbeddingProvider(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_rows_picked_by_name_from_files(self):
        path = os.path.join(self.tmp.name, "e.npy")
        rows = np.eye(3, 4, dtype=np.float32)
        save_text_embeddings(path, rows, Vocabulary.from_names(["cat", "dog", "cow"]), model="test")
        provider = ClassEmbeddingProvider(files=[path])
        np.testing.assert_array_equal(provider(Vocabulary.from_names(["cow", "cat"])), rows[[2, 0]])
        with self.assertRaisesRegex(InputError, r"e\.npy: no text embedding for 'zebra' \(1 of the 2 classes of my set\)"):
            provider(Vocabulary.from_names(["cat", "zebra"]), "my set")

    def test_computed_once_then_read_from_cache_keyed_by_prompt_and_classes(self):
        kwargs = dict(model_name="RN50", pretrained="none", seed=0, cache_dir=self.tmp.name)
        vocabulary = Vocabulary.from_names(["circle", "star"], {"circle": ["disk"]})
        computed = ClassEmbeddingProvider(**kwargs)(vocabulary)
        self.assertEqual(computed.shape, (2, 1024))
        self.assertEqual(len([f for f in os.listdir(self.tmp.name) if f.endswith(".npy")]), 1)
        fresh = ClassEmbeddingProvider(**kwargs)
        np.testing.assert_array_equal(fresh(vocabulary), computed)
        self.assertIsNone(fresh._encoder)  # served from the cache: no text model was built
        self.assertNotEqual(fresh.cache_key(vocabulary), ClassEmbeddingProvider(**kwargs, templates=["{}"]).cache_key(vocabulary))
        self.assertNotEqual(fresh.cache_key(vocabulary), fresh.cache_key(Vocabulary.from_names(["star", "circle"])))
        averaged = ClassEmbeddingProvider(**kwargs, average_synonyms=True)
        self.assertNotEqual(fresh.cache_key(vocabulary), averaged.cache_key(vocabulary))
        # Synonyms change the key only where they change the numbers.
        self.assertEqual(fresh.cache_key(vocabulary), fresh.cache_key(Vocabulary.from_names(["circle", "star"])))
