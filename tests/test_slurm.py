import argparse
import glob
import json
import os
import re
import stat
import tempfile
import unittest
from unittest import mock

from tests.helpers import make_shapes, requires_detectron2, run_script, write_shape_embeddings
from xpseudo.slurm import SlurmOptionError, add_slurm_arguments, build_executor, job_port
from xpseudo.slurm.jobs import TrainingJob, requeue_loss_warnings

CONFIG = "configs/shapes/xpm_teacher_R18_FPN.yaml"

# Stand-ins for the Slurm commands submitit calls: sbatch hands out job ids 4242, 4243, ...
SBATCH = """#!/bin/bash
n=$(cat "{counter}" 2>/dev/null || echo 4242)
echo $((n + 1)) > "{counter}"
echo "$@" >> "{calls}"
echo "Submitted batch job $n"
"""
QUIET = "#!/bin/bash\nexit 0\n"


def slurm_args(argv):
    parser = argparse.ArgumentParser()
    add_slurm_arguments(parser)
    return parser.parse_args(argv)


class TestSlurmOptions(unittest.TestCase):
    """detectron2-free: the executor, its validation, ports and the requeue check."""

    def test_rejected_option_and_unwritable_job_dir_fail_before_submitting(self):
        with tempfile.TemporaryDirectory() as tmp:
            # the local executor still checks the Slurm parameters by name
            local = ["--job-dir", tmp, "--slurm-cluster", "local"]
            with self.assertRaisesRegex(SlurmOptionError, "submitit refused the Slurm options: .*bogus"):
                build_executor(slurm_args([*local, "--slurm-option", "bogus=1"]), "x")
            with self.assertRaisesRegex(SlurmOptionError, "--sbatch expects KEY=VALUE"):
                build_executor(slurm_args([*local, "--sbatch", "mail-type"]), "x")
            build_executor(slurm_args([*local, "--slurm-option", "exclude=node7", "--sbatch", "mail-type=END"]), "x")
            blocker = os.path.join(tmp, "a_file")
            open(blocker, "w").close()
            with self.assertRaisesRegex(SlurmOptionError, "job dir .*a_file/jobs is not writable"):
                build_executor(slurm_args(["--job-dir", os.path.join(blocker, "jobs")]), "x")

    def test_sinfo_reading_and_impossible_requests(self):
        from xpseudo.slurm.partition import NodeResources, check_request, gpu_count, parse_sinfo

        self.assertEqual([gpu_count(g) for g in ("gpu:8", "gpu:a100:4(S:0-1),shard:8", "(null)", "gpu:v100:2,gpu:t4:1")], [8, 4, 0, 3])
        sinfo = "gpu|64|512000|gpu:a100:8(S:0-1)\ngpu|64|512000|gpu:a100:8(S:0-1)\ncpu*|32+|128000|(null)\n"
        self.assertEqual(parse_sinfo(sinfo, "gpu"), [NodeResources(64, 512000, 8)] * 2)
        self.assertEqual(parse_sinfo(sinfo, None), [NodeResources(32, 128000, 0)])  # the default partition
        gpu_nodes = parse_sinfo(sinfo, "gpu")
        check_request("gpu", nodes=2, gpus_per_node=8, cpus_per_node=64, mem_gb=500, available=gpu_nodes)
        with self.assertRaisesRegex(SlurmOptionError, r"--nodes 3: only 2 node\(s\) of partition gpu"):
            check_request("gpu", nodes=3, gpus_per_node=8, cpus_per_node=64, mem_gb=None, available=gpu_nodes)
        with self.assertRaisesRegex(SlurmOptionError, r"--cpus-per-task 80: the nodes of partition gpu have at most 64 CPUs"):
            check_request("gpu", nodes=1, gpus_per_node=8, cpus_per_node=80, mem_gb=None, available=gpu_nodes)
        with self.assertRaisesRegex(SlurmOptionError, r"--gpus-per-node 8: .* at most 0 GPUs \(use --gpus-per-node 0"):
            check_request(None, nodes=1, gpus_per_node=8, cpus_per_node=8, mem_gb=None, available=parse_sinfo(sinfo, None))
        with self.assertRaisesRegex(SlurmOptionError, r"--partition: sinfo lists no node in partition big"):
            check_request("big", nodes=1, gpus_per_node=0, cpus_per_node=1, mem_gb=None, available=parse_sinfo(sinfo, "big"))

    def test_cpu_jobs_ask_one_cpu_per_process_unless_told(self):
        from xpseudo.slurm.options import cpus_per_task

        self.assertEqual(cpus_per_task(slurm_args(["--gpus-per-node", "8"]), gpus=8),
                         (80, "--cpus-per-task (default: --cpus-per-gpu 10 x 8 GPUs)"))
        self.assertEqual(cpus_per_task(slurm_args(["--gpus-per-node", "0"]), gpus=0, processes=2), (2, "--cpus-per-task (default: one per process)"))
        self.assertEqual(cpus_per_task(slurm_args(["--gpus-per-node", "0", "--cpus-per-task", "16"]), gpus=0, processes=2), (16, "--cpus-per-task"))
        self.assertEqual(cpus_per_task(slurm_args(["--cpus-per-task", "6"]), gpus=8), (6, "--cpus-per-task"))

    def test_status_from_result_files_when_slurm_forgot_the_jobs(self):
        import pickle

        from xpseudo.slurm.status import pipeline_status

        with tempfile.TemporaryDirectory() as tmp:
            def job(job_id, outcome=None):
                paths = {k: os.path.join(tmp, f"{job_id}_{k}") for k in ("result", "stdout", "stderr")}
                if outcome:
                    with open(paths["result"], "wb") as f:
                        pickle.dump(outcome, f)
                return {"job_id": job_id, **paths}
            stages = [{"stage": "teacher", "jobs": [job("7", ("success", None))]},
                      {"stage": "pseudo-label shards", "jobs": [job("8_0", ("success", 0)), job("8_1", ("error", "Traceback ...\nValueError: boom\n"))]},
                      {"stage": "merge", "jobs": [job("9")]}]
            with open(os.path.join(tmp, "slurm_jobs.json"), "w") as f:
                json.dump({"stages": stages}, f)
            env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}  # no cluster: scontrol and sacct fail
            with mock.patch.dict(os.environ, env, clear=True):
                lines = pipeline_status(tmp).splitlines()
        self.assertEqual(lines[1].split(), ["teacher", "7", "COMPLETED"])
        self.assertEqual(lines[2].split()[:5], ["pseudo-label", "shards", "8", "(x2)", "COMPLETED/FAILED"])
        self.assertTrue(lines[2].endswith("ValueError: boom"))
        self.assertEqual(lines[3].split(), ["merge", "9", "UNKNOWN"])
        self.assertEqual(lines[-1], f"first failed stage: pseudo-label shards (job 8_1); its log: {os.path.join(tmp, '8_1_stderr')}")

    def test_port_from_job_id(self):
        self.assertEqual(job_port("1234"), 16234)
        self.assertEqual(job_port("1234_7"), job_port("12347"))
        self.assertTrue(15000 <= job_port("987654321") < 35000)

    def test_requeue_loss_warnings(self):
        self.assertEqual(requeue_loss_warnings(90000, 5000, 4320), [])
        self.assertIn("restarts from iteration 0", requeue_loss_warnings(900, 900, 60)[0])
        self.assertIn("over 10% of SOLVER.MAX_ITER", requeue_loss_warnings(1000, 200, 60)[0])
        self.assertIn("60 min time limit", requeue_loss_warnings(90000, 5000, 60, seconds_per_iter=0.5)[0])

    def test_checkpoint_resubmits_the_same_arguments_with_resume(self):
        args = argparse.Namespace(config_file="c.yaml", resume=False, eval_only=False, num_gpus=8,
                                  opts=["SOLVER.MAX_ITER", "10", "OUTPUT_DIR", "/o"])
        resubmission = TrainingJob(args).checkpoint()
        job = resubmission.function
        self.assertIsInstance(job, TrainingJob)
        self.assertTrue(job.args.resume)
        self.assertEqual(job.args.opts, ["SOLVER.MAX_ITER", "10", "OUTPUT_DIR", "/o"])
        again = job.checkpoint().function  # a second requeue appends nothing either
        self.assertEqual(again.args.opts, args.opts)
        self.assertEqual(again.args.config_file, "c.yaml")
        self.assertFalse(args.resume)  # the original is untouched


@requires_detectron2
class TestSubmission(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        make_shapes(os.path.join(root, "shapes"), num_train=6, num_val=2, image_size=96)
        cls.emb = write_shape_embeddings(os.path.join(root, "emb.npy"))
        cls.opts = ["MODEL.XPM.TEXT_EMBEDDINGS", cls.emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                    "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2", "DATASETS.TEST", "()"]
        # stand-in Slurm commands
        cls.bin = os.path.join(root, "bin")
        os.makedirs(cls.bin)
        cls.calls = os.path.join(root, "sbatch_calls.txt")
        for name, text in (("sbatch", SBATCH.format(counter=os.path.join(root, "counter"), calls=cls.calls)),
                           ("sacct", QUIET), ("scontrol", QUIET), ("scancel", QUIET), ("srun", QUIET)):
            path = os.path.join(cls.bin, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
        cls.slurm_env = {"DETECTRON2_DATASETS": root, "PATH": cls.bin + os.pathsep + os.environ["PATH"]}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def submission_files(self, job_dir):
        found = {}
        for path in glob.glob(os.path.join(job_dir, "**", "*_submission.sh"), recursive=True):
            with open(path) as f:
                found[os.path.basename(path)] = f.read()
        return found

    def test_local_executor_trains_then_labels_two_shards_and_merges(self):
        jobs, out = os.path.join(self.tmp.name, "local_jobs"), os.path.join(self.tmp.name, "local_train")
        env = {"DETECTRON2_DATASETS": self.tmp.name}
        # no --gpus-per-node: the local executor runs as many processes as this machine has GPUs, or one on the CPU
        result = run_script("tools/train_net.py", "--config-file", CONFIG, "--slurm", "--slurm-cluster", "local",
                            "--job-dir", jobs, *self.opts, "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", out, env=env)
        self.assertIn("submitted training", result.stdout)
        self.assertIn("local jobs finished", result.stdout)
        self.assertTrue(os.path.exists(os.path.join(out, "model_final.pth")))
        labels = os.path.join(self.tmp.name, "local_labels")
        result = run_script("tools/generate_pseudo_labels.py", "--config-file", CONFIG, "--dataset", "shapes_train_captions",
                            "--output", labels, "--num-shards", "2", "--slurm", "--slurm-cluster", "local", "--gpus-per-node", "0",
                            "--job-dir", jobs, *self.opts, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), env=env)
        self.assertIn("submitted 2 pseudo-label shards", result.stdout)
        with open(os.path.join(labels, "provenance.json")) as f:
            provenance = json.load(f)
        self.assertEqual(len(provenance["shards"]), 2)
        self.assertEqual(provenance["counts"]["images"], 6)

    def test_local_executor_refuses_more_gpus_than_the_machine_has(self):
        import torch

        jobs = os.path.join(self.tmp.name, "refused_jobs")
        asked = torch.cuda.device_count() + 1
        result = run_script("tools/train_net.py", "--config-file", CONFIG, "--slurm", "--slurm-cluster", "local", "--gpus-per-node", asked,
                            "--job-dir", jobs, *self.opts, "SOLVER.MAX_ITER", "2", check=False)
        self.assertEqual(result.returncode, 2, result.stderr[-2000:])
        self.assertIn(f"error: --gpus-per-node {asked}: this machine has {asked - 1} GPU(s) and --slurm-cluster local runs the jobs here",
                      result.stderr)
        self.assertEqual(glob.glob(os.path.join(jobs, "*", "*.pkl")), [])  # nothing submitted

    def test_slurm_executor_writes_the_requested_sbatch_files(self):
        jobs = os.path.join(self.tmp.name, "slurm_jobs")
        result = run_script("tools/train_net.py", "--config-file", CONFIG, "--slurm", "--nodes", "2", "--gpus-per-node", "8",
                            "--partition", "gpu", "--time", "90", "--job-dir", jobs, "--account", "acct", "--sbatch", "mail-type=END",
                            "--seconds-per-iter", "2", *self.opts, env=self.slurm_env)
        # 900 iterations, one checkpoint at the end: a requeue would start over
        self.assertIn("restarts from iteration 0", result.stdout)
        self.assertIn("of the 90 min time limit", result.stdout)
        self.assertRegex(result.stdout, r"submitted training \(.*slurm_jobs/output\): job 4\d+; logs: ")
        files = self.submission_files(jobs)
        self.assertEqual(len(files), 1)
        text = next(iter(files.values()))
        for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                     "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=80", "#SBATCH --account=acct", "#SBATCH --mail-type=END"):
            self.assertIn(line, text)
        weights = os.path.join(self.tmp.name, "fake_weights.pth")
        open(weights, "w").close()
        labels_jobs = os.path.join(self.tmp.name, "label_jobs")
        result = run_script("tools/generate_pseudo_labels.py", "--config-file", CONFIG, "--dataset", "shapes_train_captions",
                            "--output", os.path.join(self.tmp.name, "labels"), "--num-shards", "3", "--array-parallelism", "2",
                            "--slurm", "--partition", "gpu", "--job-dir", labels_jobs, *self.opts, "MODEL.WEIGHTS", weights, env=self.slurm_env)
        texts = sorted(self.submission_files(labels_jobs).values(), key=len)
        array = [t for t in texts if "--array=" in t]
        merge = [t for t in texts if "--dependency=" in t]
        self.assertEqual(len(array), 1)
        self.assertIn("#SBATCH --array=0-2%2", array[0])
        array_id = re.search(r"3 pseudo-label shards \(.*?\): job (\d+)", result.stdout).group(1)
        self.assertIn(f"#SBATCH --dependency=afterok:{array_id}", merge[0])

    def test_pipeline_jobs_wait_for_each_other(self):
        out = os.path.join(self.tmp.name, "pipe")
        result = run_script("tools/run_pipeline.py", "--config-dir", "configs/shapes", "--output", out, "--num-shards", "2",
                            "--slurm", "--partition", "gpu", "--nodes", "2", "--grounding", "--opts", *self.opts, env=self.slurm_env)
        ids = {}
        for line in result.stdout.splitlines():
            if line.startswith("submitted "):
                ids[line.split(": job ")[0][len("submitted "):]] = re.search(r": job (\d+)", line).group(1)
        self.assertEqual(len(ids), 6, result.stdout)
        files = self.submission_files(os.path.join(out, "slurm_jobs"))

        def dependency_of(job_id):
            text = files[f"{job_id}_submission.sh"] if f"{job_id}_submission.sh" in files else files[f"{job_id}_0_submission.sh"]
            return [l for l in text.splitlines() if "--dependency=" in l]
        grounding, teacher, shards, merge, student, summary = ids.values()
        self.assertEqual(dependency_of(grounding), [])
        self.assertEqual(dependency_of(teacher), [f"#SBATCH --dependency=afterok:{grounding}"])
        self.assertEqual(dependency_of(shards), [f"#SBATCH --dependency=afterok:{teacher}"])
        self.assertEqual(dependency_of(merge), [f"#SBATCH --dependency=afterok:{shards}"])
        self.assertEqual(dependency_of(student), [f"#SBATCH --dependency=afterok:{merge}"])
        self.assertEqual(dependency_of(summary), [f"#SBATCH --dependency=afterok:{student}"])
        for job_id in (teacher, shards, merge, student, summary):  # a failed stage ends its dependents
            text = files.get(f"{job_id}_submission.sh") or files[f"{job_id}_0_submission.sh"]
            self.assertIn("#SBATCH --kill-on-invalid-dep=yes", text)
        for job_id, nodes in ((grounding, 2), (teacher, 2), (shards, 1), (merge, 1), (student, 2), (summary, 1)):  # --nodes is training's
            text = files.get(f"{job_id}_submission.sh") or files[f"{job_id}_0_submission.sh"]
            self.assertIn(f"#SBATCH --nodes={nodes}\n", text)
        with open(os.path.join(out, "slurm_jobs.json")) as f:  # what --status reads
            recorded = json.load(f)["stages"]
        self.assertEqual([(s["stage"], s["jobs"][0]["job_id"].split("_")[0]) for s in recorded],
                         list(zip(["grounding", "teacher", "pseudo-label shards", "merge", "student", "summary"], ids.values())))
        self.assertEqual(len(recorded[2]["jobs"]), 2)  # one per array task

    def test_rounds_and_the_oracle_wait_for_what_they_use(self):
        out = os.path.join(self.tmp.name, "pipe_rounds")
        result = run_script("tools/run_pipeline.py", "--config-dir", "configs/shapes", "--output", out, "--num-shards", "2",
                            "--slurm", "--partition", "gpu", "--no-grounding", "--rounds", "2", "--oracle", "--opts", *self.opts, env=self.slurm_env)
        ids = {line.split(": job ")[0][len("submitted "):]: re.search(r": job (\d+)", line).group(1)
               for line in result.stdout.splitlines() if line.startswith("submitted ")}
        files = self.submission_files(os.path.join(out, "slurm_jobs"))

        def dependency_of(what):
            job_id = ids[what]
            text = files[f"{job_id}_submission.sh"] if f"{job_id}_submission.sh" in files else files[f"{job_id}_0_submission.sh"]
            return [line.split("afterok:")[1].split(":") for line in text.splitlines() if "--dependency=" in line]

        folder = lambda *parts: os.path.join(out, *parts)  # noqa: E731
        student, teacher = ids[f"training ({folder('student')})"], ids[f"training ({folder('teacher')})"]
        round2_merge = ids[f"merge ({folder('round2', 'pseudo_labels')})"]
        self.assertEqual(dependency_of(f"2 pseudo-label shards ({folder('round2', 'pseudo_labels')})"), [[student]])
        self.assertEqual(dependency_of(f"training ({folder('round2', 'student')})"), [[round2_merge]])
        self.assertEqual(dependency_of(f"training ({folder('oracle')})"), [[teacher]])  # beside the labels, not after them
        self.assertEqual(dependency_of("evaluation and summary"), [[ids[f"training ({folder('round2', 'student')})"], ids[f"training ({folder('oracle')})"]]])

    def test_more_shards_than_images_refused_before_submitting(self):
        weights = os.path.join(self.tmp.name, "fake.pth")
        open(weights, "w").close()
        jobs = os.path.join(self.tmp.name, "too_many")
        result = run_script("tools/generate_pseudo_labels.py", "--config-file", CONFIG, "--dataset", "shapes_train_captions",
                            "--output", os.path.join(self.tmp.name, "x"), "--num-shards", "7", "--slurm", "--job-dir", jobs,
                            *self.opts, "MODEL.WEIGHTS", weights, check=False, env=self.slurm_env)
        self.assertEqual(result.returncode, 2)
        self.assertIn("7 shards for 6 images", result.stderr)
        self.assertEqual(self.submission_files(jobs), {})


if __name__ == "__main__":
    unittest.main()
