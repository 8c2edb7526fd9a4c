import json
import os
import stat
import tempfile
import unittest

from xpseudo.utils.io import InputError, atomic_write, atomic_write_json, load_json


class TestAtomicWrite(unittest.TestCase):
    def test_failure_keeps_the_previous_file_and_leaves_no_temporary(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "out.json")
            atomic_write_json(path, {"a": 1})
            with self.assertRaises(RuntimeError):
                with atomic_write(path) as f:
                    f.write('{"a": ')
                    raise RuntimeError("killed mid-write")
            self.assertEqual(load_json(path), {"a": 1})
            self.assertEqual(os.listdir(tmp), ["out.json"])

    def test_new_file_gets_the_permissions_open_would_give(self):
        with tempfile.TemporaryDirectory() as tmp:
            previous = os.umask(0o022)
            try:
                atomic_write_json(os.path.join(tmp, "shared.json"), [])
                with open(os.path.join(tmp, "plain.json"), "w") as f:
                    json.dump([], f)
            finally:
                os.umask(previous)
            modes = [stat.S_IMODE(os.stat(os.path.join(tmp, n)).st_mode) for n in ("shared.json", "plain.json")]
            self.assertEqual(modes, [0o644, 0o644])

    def test_malformed_json_names_the_file_and_place(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.json")
            with open(path, "w") as f:
                f.write('{"a": 1,\n "b": }')
            with self.assertRaisesRegex(InputError, r"bad.json: malformed JSON at line 2 column 7"):
                load_json(path)


if __name__ == "__main__":
    unittest.main()
