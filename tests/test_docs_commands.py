"""Docs stay honest: every `python tools/X.py ...` (and datasets/, projects/) command in README.md and
docs/ parses with that tool's own argument parser, and every KEY VALUE override names a config key."""
import argparse
import glob
import os
import re
import runpy
import shlex
import sys
import unittest
from unittest import mock

from tests.helpers import REPO, requires_detectron2

DOCS = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
COMMAND = re.compile(r"^\s*python3? ((?:tools|datasets|projects/\w+)/\w+\.py)\b(.*)$")
# option values that are lists of overrides in run_pipeline.py
OVERRIDE_LISTS = ("opts", "grounding_opts", "teacher_opts", "student_opts")
# a bash array defined in a code block (NAME=(...)), and one used as "${NAME[@]}"
ARRAY_DEFINITION = re.compile(r"^\s*(\w+)=\((.*)\)\s*$")
ARRAY_USE = re.compile(r"^\$\{(\w+)\[@\]\}$")


def expand_arrays(arguments, arrays):
    """Arguments with each "${NAME[@]}" of a known array replaced by its elements."""
    expanded = []
    for argument in arguments:
        use = ARRAY_USE.match(argument)
        expanded.extend(arrays[use.group(1)] if use and use.group(1) in arrays else [argument])
    return expanded


def doc_commands(path):
    """(line number, script, argument list) of each command line in the file's code blocks; lines
    continued with a backslash are joined; "# comments" and "[...]" optional parts are dropped;
    bash arrays defined in an earlier code block of the file are expanded."""
    found, in_code, pending, start, arrays = [], False, "", 0, {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.lstrip().startswith("```"):
                in_code, pending = not in_code, ""
                continue
            if not in_code:
                continue
            text = line.rstrip("\n")
            if not pending:
                start = number
            if text.rstrip().endswith("\\"):
                pending += text.rstrip()[:-1] + " "
                continue
            text, pending = pending + text, ""
            definition = ARRAY_DEFINITION.match(text)
            if definition:
                arrays[definition.group(1)] = expand_arrays(shlex.split(definition.group(2)), arrays)
            match = COMMAND.match(text)
            if match:
                arguments = re.sub(r"\s+#.*$", "", match.group(2))
                found.append((start, match.group(1), expand_arrays(shlex.split(arguments), arrays)))
    return found


class Parsed(Exception):
    """Raised by the spy in place of running the tool once its command line is parsed."""


def parse_with_tool(script, arguments):
    """The namespace the tool's own parser makes of ``arguments`` (SystemExit on a bad flag)."""
    original = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", spy), mock.patch.object(sys, "argv", [script, *arguments]):
        try:
            runpy.run_path(os.path.join(REPO, script), run_name="__main__")
        except Parsed as parsed:
            return parsed.args[0]
    raise AssertionError(f"{script} finished without parsing a command line")


def override_problems(namespace, cfg):
    """Override keys of the parsed command line that the config does not have."""
    problems = []
    for key in OVERRIDE_LISTS:
        values = list(getattr(namespace, key, None) or [])
        for name in values[::2]:
            node = cfg
            for part in name.split("."):
                if not hasattr(node, "keys") or part not in node:
                    problems.append(name)
                    break
                node = node[part]
    return problems


def full_config():
    from detectron2.config import get_cfg

    from clipes.config import add_clipes_config
    from xpseudo.config import add_xpseudo_config

    cfg = get_cfg()
    add_xpseudo_config(cfg)
    add_clipes_config(cfg)
    return cfg


def check_command(script, arguments, cfg):
    """None when the command parses and its overrides exist; else the problem."""
    if not os.path.isfile(os.path.join(REPO, script)):
        return f"{script} does not exist"
    try:
        namespace = parse_with_tool(script, arguments)
    except SystemExit as e:
        return f"its parser refuses the arguments (exit {e.code})"
    problems = override_problems(namespace, cfg)
    return f"unknown config keys {problems}" if problems else None


@requires_detectron2
class TestDocsCommands(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cfg = full_config()

    def test_every_command_parses_and_names_real_config_keys(self):
        count = 0
        for path in DOCS:
            for number, script, arguments in doc_commands(path):
                count += 1
                with self.subTest(f"{os.path.relpath(path, REPO)}:{number}"):
                    with mock.patch("sys.stdout"), mock.patch("sys.stderr"):
                        problem = check_command(script, arguments, self.cfg)
                    self.assertIsNone(problem, f"{os.path.relpath(path, REPO)}:{number}: python {script} {shlex.join(arguments)}")
        self.assertGreater(count, 30)

    def test_a_made_up_flag_or_key_is_caught(self):
        with mock.patch("sys.stdout"), mock.patch("sys.stderr"):
            self.assertIsNone(check_command("tools/train_net.py", ["--config-file", "c.yaml", "SOLVER.MAX_ITER", "2"], self.cfg))
            self.assertIn("refuses", check_command("tools/train_net.py", ["--config-file", "c.yaml", "--made-up", "1"], self.cfg))
            self.assertIn("MODEL.XPM.MADE_UP", check_command("tools/train_net.py", ["--config-file", "c.yaml", "MODEL.XPM.MADE_UP", "1"],
                                                              self.cfg))
            self.assertIn("MODEL.MADE_UP", check_command("tools/run_pipeline.py", ["--config-dir", "d", "--output", "o", "--teacher-opts",
                                                                                    "MODEL.MADE_UP", "1"], self.cfg))
            self.assertIn("does not exist", check_command("tools/made_up.py", [], self.cfg))

    def test_a_made_up_key_inside_a_bash_array_is_caught(self):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".md") as doc:
            doc.write('```bash\nGOOD=(SOLVER.MAX_ITER 2)\nBAD=("${GOOD[@]}" MODEL.MADE_UP 1)\n```\n\n```bash\n'
                      'python tools/run_pipeline.py --config-dir d --output o --student-opts "${BAD[@]}"\n```\n')
            doc.flush()
            [(number, script, arguments)] = doc_commands(doc.name)
        self.assertEqual((number, arguments[-4:]), (7, ["SOLVER.MAX_ITER", "2", "MODEL.MADE_UP", "1"]))
        with mock.patch("sys.stdout"), mock.patch("sys.stderr"):
            self.assertIn("MODEL.MADE_UP", check_command(script, arguments, self.cfg))


if __name__ == "__main__":
    unittest.main()
