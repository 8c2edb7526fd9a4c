"""The Slurm paths against a real single-node cluster (tests/slurm_cluster.py: munged, slurmctld
and slurmd from Debian's slurm-wlm and munge, private to a temporary directory), on CPU.

Skipped, with the reason, where those binaries are missing (apt-get install slurm-wlm munge).
"""
import filecmp
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

from tests.helpers import HAS_DETECTRON2, REPO, make_shapes, tiny_custom_opts, write_custom_dataset_file, write_shape_embeddings
from tests.slurm_cluster import SlurmCluster, missing_binaries

MISSING = missing_binaries()
requires_slurm = unittest.skipIf(bool(MISSING), f"no Slurm test cluster: {', '.join(MISSING)} not installed "
                                                 "(apt-get install slurm-wlm munge)")
requires_detectron2_and_slurm = unittest.skipIf(
    bool(MISSING) or not HAS_DETECTRON2,
    "needs detectron2 and Slurm (" + (f"{', '.join(MISSING)} not installed" if MISSING else "detectron2 not installed") + ")")

TEACHER = "configs/shapes/xpm_teacher_R18_FPN.yaml"
STUDENT = "configs/shapes/xpm_student_R18_FPN.yaml"


def submitted_ids(stdout: str) -> dict:
    """'submitted <what>: job <id>' lines of the tools -> {what: id}."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^submitted (.+?): job (\d+)", stdout, re.MULTILINE)}


@requires_slurm
class TestPartitionLimits(unittest.TestCase):
    """Requests the node can never satisfy are refused at submission, naming the flag (no detectron2)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.cluster = SlurmCluster(os.path.join(cls.tmp.name, "cluster")).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        cls.tmp.cleanup()

    def build(self, *flags):
        import argparse

        from xpseudo.slurm import add_slurm_arguments, build_executor

        parser = argparse.ArgumentParser()
        add_slurm_arguments(parser)
        args = parser.parse_args(["--job-dir", os.path.join(self.tmp.name, "jobs"), *flags])
        with mock.patch.dict(os.environ, {"SLURM_CONF": self.cluster.conf}):
            return build_executor(args, "x", processes=2)

    def test_limits_of_the_node(self):
        from xpseudo.slurm import SlurmOptionError

        cpus, memory_gb = self.cluster.cpus, self.cluster.memory_mb // 1024
        with self.assertRaisesRegex(SlurmOptionError, r"--gpus-per-node 8: the nodes of the default partition have at most 0 GPUs "
                                                      r"\(use --gpus-per-node 0 for a CPU partition\)"):
            self.build()  # the defaults ask for 8 GPUs
        with self.assertRaisesRegex(SlurmOptionError, rf"--cpus-per-task {cpus + 1}: .* at most {cpus} CPUs"):
            self.build("--gpus-per-node", "0", "--cpus-per-task", str(cpus + 1))
        with self.assertRaisesRegex(SlurmOptionError, rf"--mem-gb {memory_gb + 8}: .* at most {memory_gb} GB"):
            self.build("--gpus-per-node", "0", "--mem-gb", str(memory_gb + 8))
        with self.assertRaisesRegex(SlurmOptionError, r"--nodes 2: only 1 node\(s\)"):
            self.build("--gpus-per-node", "0", "--nodes", "2")
        with self.assertRaisesRegex(SlurmOptionError, r"--partition: sinfo lists no node in partition gpu"):
            self.build("--gpus-per-node", "0", "--partition", "gpu")
        executor = self.build("--gpus-per-node", "0", "--partition", "debug")  # 2 processes, a CPU each
        self.assertEqual(executor._executor.parameters["cpus_per_task"], 2)
        self.assertNotIn("gpus_per_node", executor._executor.parameters)


@requires_detectron2_and_slurm
class TestRealSlurm(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        cls.cluster = SlurmCluster(os.path.join(root, "cluster")).start()
        make_shapes(os.path.join(root, "shapes"), num_train=30, num_val=2, image_size=96)
        emb = write_shape_embeddings(os.path.join(root, "emb.npy"))
        cls.env = {**cls.cluster.env(), "DETECTRON2_DATASETS": root}
        cls.opts = ["MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                    "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001"]
        cls.train_opts = [*cls.opts, "DATASETS.TEST", "()"]  # training tests skip the evaluation

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        cls.tmp.cleanup()

    def tool(self, *args, check=True):
        result = subprocess.run([sys.executable, os.path.join(REPO, "tools", args[0]), *args[1:]], cwd=REPO, env=self.env,
                                capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
        return result

    def wait_for(self, job_ids, timeout=600):
        jobs = self.cluster.wait_for(job_ids, timeout=timeout)
        return jobs

    def log_of(self, job_dir, job_id):
        """The job's stdout and stderr ('' for a file not there yet: the job has not started)."""
        text = ""
        for name in (f"{job_id}_0_log.out", f"{job_id}_0_log.err"):
            path = os.path.join(job_dir, job_id, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text += f.read()
        return text

    def release_when_requeued(self, job_id, timeout=120):
        """A requeued job waits ~2 minutes before it may start again (BeginTime); let it go now."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.cluster.job(job_id)
            if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
                self.cluster.stop_signalling()  # the signal arrived; a retry would hit the restarted job
                self.cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
                return info
            if info.get("Restarts", "0") != "0" and info.get("JobState") in ("RUNNING", "COMPLETED"):
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} was not requeued: {self.cluster.job(job_id)}")

    def test_training_two_processes_on_a_cpu_node(self):
        jobs, out = os.path.join(self.tmp.name, "train_jobs"), os.path.join(self.tmp.name, "train")
        result = self.tool("train_net.py", "--config-file", TEACHER, "--slurm", "--gpus-per-node", "0", "--num-gpus", "2",
                           "--time", "20", "--job-dir", jobs, *self.train_opts, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out)
        job_id = submitted_ids(result.stdout)[f"training ({out})"]
        with open(os.path.join(jobs, job_id, f"{job_id}_submission.sh")) as f:
            script = f.read()
        self.assertIn("#SBATCH --cpus-per-task=2", script)  # one CPU per process
        self.assertNotIn("gpus", script)  # no GPU asked for
        info = self.wait_for([job_id])[job_id]
        self.assertEqual(info["JobState"], "COMPLETED", self.log_of(jobs, job_id)[-3000:])
        self.assertTrue(os.path.exists(os.path.join(out, "model_final.pth")))
        with open(os.path.join(out, "log.txt")) as f:
            log = f.read()
        self.assertIn("World size: 2", log)
        self.assertIn("'MODEL.DEVICE', 'cpu'", log)  # added for the CPU partition
        self.assertTrue(os.path.exists(os.path.join(out, "log.txt.rank1")))

    def test_preempted_training_requeues_and_resumes(self):
        """A later round's student (labels made by a student's model, pseudo objects weighted as
        the default does, by the student's own view relative to each class's running mean,
        blended in over 40 iterations here) preempted at iteration 20; the resumed job rebuilds
        the class means."""
        labels = os.path.join(self.tmp.name, "student_made_labels")
        self.tool("generate_pseudo_labels.py", "--config-file", STUDENT, "--dataset", "shapes_train_captions", "--output", labels,
                  *self.opts, "MODEL.WEIGHTS", self.teacher_weights())
        jobs, out = os.path.join(self.tmp.name, "preempt_jobs"), os.path.join(self.tmp.name, "preempt")
        result = self.tool("train_net.py", "--config-file", STUDENT, "--slurm", "--gpus-per-node", "0", "--time", "20",
                           "--job-dir", jobs, *self.train_opts, "MODEL.WEIGHTS", self.teacher_weights(),
                           "XPM.PSEUDO_LABELS_FILE", os.path.join(labels, "pseudo_labels.json"),
                           "MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS", "40",
                           "SOLVER.MAX_ITER", "60", "SOLVER.CHECKPOINT_PERIOD", "20", "OUTPUT_DIR", out)
        job_id = submitted_ids(result.stdout)[f"training ({out})"]
        last = os.path.join(out, "last_checkpoint")
        deadline = time.time() + 300
        while not (os.path.exists(last) and open(last).read().strip() == "model_0000019.pth"):
            if time.time() > deadline:
                self.fail(f"no model_0000019.pth after 300 s: {self.cluster.job(job_id)}\n{self.log_of(jobs, job_id)[-3000:]}")
            time.sleep(0.2)
        # what Slurm sends before a time limit or a preemption (submitit asks for --signal=USR2@120)
        self.cluster.signal(job_id, "USR2")
        self.release_when_requeued(job_id)
        info = self.wait_for([job_id])[job_id]
        log = self.log_of(jobs, job_id)
        self.assertEqual(info["JobState"], "COMPLETED", log[-3000:])
        self.assertEqual(info["Restarts"], "1")
        self.assertIn("Starting training from iteration 0", log)
        self.assertIn("Loading trainer from", log)
        self.assertIn("Starting training from iteration 20", log)  # resumed from model_0000019.pth
        with open(os.path.join(out, "metrics.json")) as f:
            iterations = [json.loads(line)["iteration"] for line in f if line.strip()]
        # the writer's period is 20: 19, 39, 59, plus what the stopped job wrote as it stopped (one
        # line per iteration its latest values come from, all after the checkpoint). Strictly
        # increasing: nothing before the checkpoint was redone.
        self.assertEqual(iterations, sorted(set(iterations)))
        self.assertEqual([i for i in iterations if i % 20 == 19], [19, 39, 59])
        self.assertTrue(all(20 <= i < 39 for i in iterations if i % 20 != 19), iterations)
        with open(os.path.join(out, "metrics.json")) as f:
            weights = [json.loads(line).get("noise_aware/pseudo_box_weight") for line in f if line.strip()]
        weights = [w for w in weights if w is not None]
        self.assertTrue(weights and all(0 < w <= 4 for w in weights), weights)  # PSEUDO_LOSS_WEIGHT 2 x relative, capped at 2
        with open(os.path.join(jobs, job_id, f"{job_id}_submission.sh")) as f:
            command = f.read()
        self.assertEqual(command.count("#SBATCH --signal=USR2@120"), 1)
        # the resubmitted job holds the same overrides, once: config.yaml of the second start says so
        with open(os.path.join(out, "log.txt")) as f:
            starts = [line for line in f if "Command line arguments" in line]
        self.assertEqual(len(starts), 2)
        for line in starts:
            self.assertEqual(line.count("'OUTPUT_DIR'"), 1)
            self.assertEqual(line.count("'SOLVER.MAX_ITER'"), 1)
        self.assertIn("resume=True", starts[1])
        self.assertTrue(os.path.exists(os.path.join(out, "model_final.pth")))

    def teacher_weights(self):
        out = os.path.join(self.tmp.name, "teacher")
        weights = os.path.join(out, "model_final.pth")
        if not os.path.exists(weights):
            self.tool("train_net.py", "--config-file", TEACHER, *self.train_opts, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out)
        return weights

    def test_pseudo_label_array_matches_one_local_shard_and_resumes_a_signalled_task(self):
        weights = self.teacher_weights()
        # large test images, one image a batch, 10 images a shard: each shard takes seconds, so the
        # signal lands mid-shard
        opts = [*self.opts, "INPUT.MIN_SIZE_TEST", "640", "INPUT.MAX_SIZE_TEST", "640", "XPM.PSEUDO_LABELS.IMS_PER_BATCH", "1",
                "MODEL.WEIGHTS", weights]
        local = os.path.join(self.tmp.name, "labels_local")
        self.tool("generate_pseudo_labels.py", "--config-file", TEACHER, "--dataset", "shapes_train_captions", "--output", local, *opts)
        jobs, out = os.path.join(self.tmp.name, "label_jobs"), os.path.join(self.tmp.name, "labels_slurm")
        result = self.tool("generate_pseudo_labels.py", "--config-file", TEACHER, "--dataset", "shapes_train_captions", "--output", out,
                           "--num-shards", "3", "--array-parallelism", "1", "--slurm", "--gpus-per-node", "0", "--time", "20",
                           "--job-dir", jobs, *opts)
        ids = submitted_ids(result.stdout)
        array, merge = ids[f"3 pseudo-label shards ({out})"], ids[f"merge ({out})"]
        # signal the first shard's task once it has written an image but not finished
        task = f"{array}_0"
        partial = os.path.join(out, "shards", "shard-00000-of-00003.jsonl.partial")
        deadline = time.time() + 300
        while not (os.path.exists(partial) and sum(1 for line in open(partial) if line.startswith('{"image"')) >= 1):
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        self.cluster.signal(task, "USR2")
        self.release_when_requeued(task)
        tasks = [f"{array}_{i}" for i in range(3)]
        states = self.wait_for(tasks + [merge])
        self.assertEqual({j: i["JobState"] for j, i in states.items()}, {j: "COMPLETED" for j in tasks + [merge]})
        self.assertEqual(states[task]["Restarts"], "1")
        with open(os.path.join(out, "log_shard0.txt")) as f:
            self.assertRegex(f.read(), r"shard-00000-of-00003\.jsonl\.partial: resuming after [1-9] images")
        self.assertTrue(filecmp.cmp(os.path.join(local, "pseudo_labels.json"), os.path.join(out, "pseudo_labels.json"), shallow=False))
        with open(os.path.join(out, "provenance.json")) as f:
            self.assertEqual(len(json.load(f)["shards"]), 3)

    def pipeline(self, out, *extra):
        return self.tool("run_pipeline.py", "--config-dir", "configs/shapes", "--output", out, "--num-shards", "2", "--slurm",
                         "--gpus-per-node", "0", "--time", "20", *extra, "--grounding", "--grounding-opts", "MODEL.XPM.GROUNDING.WORDS", "vocabulary",
                         "--opts", *self.opts, "SOLVER.MAX_ITER", "2")

    def test_pipeline_chain_ends_with_the_summary(self):
        out = os.path.join(self.tmp.name, "pipe")
        ids = submitted_ids(self.pipeline(out, "--rounds", "2", "--oracle").stdout)
        folder = lambda *parts: os.path.join(out, *parts)  # noqa: E731
        self.assertEqual(list(ids), [f"training ({folder('grounding')})", f"training ({folder('teacher')})",
                                     f"2 pseudo-label shards ({folder('pseudo_labels')})", f"merge ({folder('pseudo_labels')})",
                                     f"training ({folder('student')})",
                                     f"2 pseudo-label shards ({folder('round2', 'pseudo_labels')})", f"merge ({folder('round2', 'pseudo_labels')})",
                                     f"training ({folder('round2', 'student')})", f"training ({folder('oracle')})", "evaluation and summary"])
        summary_id = ids["evaluation and summary"]
        info = self.wait_for([summary_id], timeout=900)[summary_id]
        status = self.tool("run_pipeline.py", "--status", "--output", out).stdout
        self.assertEqual(info["JobState"], "COMPLETED", status)
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(set(summary["results"]["shapes_val"]), {"teacher", "student", "student round 2", "oracle"})
        self.assertEqual(set(summary["pseudo_label_quality"]), {"ground_truth", "round 1", "round 2"})
        rows = {re.split(r"\s{2,}", line)[0]: line for line in status.splitlines()[1:] if line.strip()}
        for stage in ("grounding", "teacher", "pseudo-label shards", "merge", "student", "pseudo-label shards round 2", "merge round 2",
                      "student round 2", "oracle", "summary"):
            self.assertIn("COMPLETED", rows[stage], status)
        # the oracle waited for the teacher only, the summary for everything
        with open(os.path.join(out, "slurm_jobs.json")) as f:
            self.assertEqual([s["stage"] for s in json.load(f)["stages"]],
                             ["grounding", "teacher", "pseudo-label shards", "merge", "student", "pseudo-label shards round 2",
                              "merge round 2", "student round 2", "oracle", "summary"])
        self.assertNotIn("first failed stage", status)

    def test_pipeline_from_a_dataset_file(self):
        """configs/custom with a dataset file given relative to the submitting directory: every job
        (stages, shards, merge, summary) reads the same datasets."""
        work = os.path.join(self.tmp.name, "custom")
        write_custom_dataset_file(os.path.join(work, "mine"))
        emb = write_shape_embeddings(os.path.join(work, "emb.npy"))
        out = os.path.join(work, "out")
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", "run_pipeline.py"), "--config-dir", os.path.join(REPO, "configs", "custom"),
             "--output", out, "--num-shards", "2", "--slurm", "--gpus-per-node", "0", "--time", "20", "--no-grounding",
             "--opts", *tiny_custom_opts(emb), "XPM.DATASET_FILES", "('mine/datasets.yaml',)"],
            cwd=work, env={**self.env, "DETECTRON2_DATASETS": os.path.join(work, "no_builtin_data")}, capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])
        summary_id = submitted_ids(result.stdout)["evaluation and summary"]
        info = self.wait_for([summary_id], timeout=900)[summary_id]
        status = self.tool("run_pipeline.py", "--status", "--output", out).stdout
        self.assertEqual(info["JobState"], "COMPLETED", status)
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(set(summary["results"]["custom_val"]), {"teacher", "student"})
        self.assertEqual(summary["pseudo_label_counts"]["images"], 8)

    def test_failed_stage_stops_its_dependents_and_status_says_why(self):
        out = os.path.join(self.tmp.name, "pipe_failing")
        ids = submitted_ids(self.pipeline(out, "--teacher-opts", "MODEL.XPM.TRAIN_CLASSES", "bogus").stdout)
        teacher = ids["training (" + os.path.join(out, "teacher") + ")"]
        grounding = ids["training (" + os.path.join(out, "grounding") + ")"]
        others = [i for what, i in ids.items() if i not in (teacher, grounding)]
        states = self.wait_for([grounding, teacher, *others])
        self.assertEqual(states[grounding]["JobState"], "COMPLETED")
        self.assertEqual(states[teacher]["JobState"], "FAILED")
        for job_id in others:  # never started: ended by --kill-on-invalid-dep=yes
            self.assertEqual(states[job_id]["JobState"], "CANCELLED")
            self.assertEqual(states[job_id]["Reason"], "DependencyNeverSatisfied")
        self.assertFalse(os.path.exists(os.path.join(out, "summary.json")))
        status = self.tool("run_pipeline.py", "--status", "--output", out).stdout
        rows = {line.split()[0]: line for line in status.splitlines()[1:] if line.strip()}
        self.assertIn("FAILED", rows["teacher"])
        self.assertIn("ValueError: MODEL.XPM.TRAIN_CLASSES must be 'base' or 'all', got 'bogus'", rows["teacher"])
        for stage in ("pseudo-label", "merge", "student", "summary"):
            self.assertIn("CANCELLED", rows[stage])
            self.assertIn("never ran: a job it waits for failed", rows[stage])
        self.assertIn(f"first failed stage: teacher (job {teacher}); its log: ", status)


if __name__ == "__main__":
    unittest.main()
