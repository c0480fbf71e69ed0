"""Scaling over processes: expert training (non-DP and DP-SGD) and audit scoring with 1 and 2 processes (torchrun).

    python benchmarks/scaling.py [--preset small] [--steps 20] [--processes 1,2] [--device cpu] > scaling.json

For each process count N it launches `torchrun --nproc-per-node N` on this file in worker mode (N=1 runs the
single-process code path: no process group) and measures, on rank 0:
  * expert training (flexaudit.moe.training.train, DDP for N > 1): tokens/s of the owner's logical batch
    (batch x seq_len tokens per step) from the median step time, and the fraction of the machine's matmul
    peak its FLOPs reach (FLOPs counted as benchmarks/training_throughput.py counts them);
  * DP-SGD expert training (flexaudit.privacy.dpsgd.train_dp, the fused engine, the clipped sums all-reduced
    for N > 1): tokens/s and the DP/non-DP step-time ratio at the same expected logical batch;
  * audit scoring (attacks.score_texts with every Min-K%++ statistic, split by batches for N > 1): tokens/s,
    best of --repeats;
and the max |weight difference| between the N-process and the 1-process runs after --steps steps (same seed,
same logical batches, same Poisson samples and noise), and the max |score difference|. What "the same to float32
summation order" means is measured beside it: one process with twice the threads (other matmul blocking, so other
rounding) against one process, the same way ("reference_1_process_more_threads").

Threads: on the CPU every process gets --threads-per-process threads (default 1: the scaling of processes, one
core each). The fp32 matmul peak is measured in each run, by every process at once on its own device just before
training, and summed ("matmul_peak_flops_all_processes"): the peak of the cores (or GPUs) in use under the load
of that moment, which the fraction of peak is of; the machine's 1-thread and --cores-thread CPU peaks are
recorded beside it. Timings on a shared machine are noisy: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from training_throughput import forward_flops_per_token  # noqa: E402

from flexaudit.machine import matmul_peak  # noqa: E402


class StepTimer:
    """A flexaudit Progress that records when each step ends (rank 0 gets it; the others a null one)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def task(self, description: str, total: int | None = None):
        timer = self

        class _Task:
            def advance(self, n: int = 1, **fields: object) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.times.extend([time.perf_counter()] * n)

            def close(self) -> None:
                pass

        return _Task()

    def note(self, message: str) -> None:
        pass

    def median_step(self, skip: int = 3) -> float:
        """Median seconds per step, leaving out the first `skip` steps (allocation, warm-up)."""
        gaps = [b - a for a, b in zip(self.times, self.times[1:])][skip:]
        return statistics.median(gaps)


def worker(args) -> None:
    from safetensors.torch import save_file

    import attacks
    from attacks import testing as tiny
    from flexaudit.moe.anchor import PRESETS
    from flexaudit.moe.device import Placement
    from flexaudit.moe.distributed import local_device, session
    from flexaudit.moe.expert import upcycle
    from flexaudit.moe.model import FlexOlmo
    from flexaudit.moe.training import PackedStream, TrainSettings, train
    from flexaudit.privacy.dpsgd import DPSettings, train_dp, unit_windows

    placement = Placement.of(local_device(args.device), "float32")
    preset = PRESETS[args.preset]
    cfg = preset.model_config(preset.vocab_size)
    out = Path(args.out)
    with session(placement.device) as world, tempfile.TemporaryDirectory() as tmp:
        g = torch.Generator().manual_seed(1)
        # every document longer than a row, so a DP unit (one window) holds as many tokens as a packed row
        # and the DP and non-DP steps see the same tokens per row
        docs = [torch.randint(2, cfg.vocab_size, (int(n),), generator=g).tolist()
                for n in torch.randint(preset.seq_len + 1, 3 * preset.seq_len, (400,), generator=g)]
        settings = TrainSettings(steps=args.steps, batch_size=preset.batch_size, seq_len=preset.seq_len, lr=2e-3,
                                 warmup_steps=2, checkpoint_every=10 ** 6)

        def expert_model():
            torch.manual_seed(0)
            model = upcycle(FlexOlmo(cfg).to(placement.device), torch.randn(cfg.num_layers, cfg.hidden_size) * 0.01,
                            router_bias=False)
            model.freeze_anchor()
            return model

        # the peak of the cores this run uses, under the load of the moment: every process multiplies at once
        world.barrier()
        peak = world.all_reduce_(torch.tensor([matmul_peak(device=placement.device)], dtype=torch.float64)).item()
        results: dict = {"processes": world.size, "threads_per_process": torch.get_num_threads(),
                         "matmul_peak_flops_all_processes": peak}
        model, timer = expert_model(), StepTimer()
        stream = PackedStream(docs, seq_len=preset.seq_len, batch_size=preset.batch_size, seed=0)
        train(model, stream, settings, checkpoint_dir=Path(tmp) / "plain", resume=False, identity={},
              placement=placement, progress=timer)
        plain = timer.median_step() if world.main else 0.0
        trained = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}

        unit_rows, _ = unit_windows(docs, seq_len=preset.seq_len, max_windows=1)
        dp = DPSettings(noise_multiplier=1.0, sample_rate=preset.batch_size / len(unit_rows), max_grad_norm=1.0,
                        delta=1e-6, unit="document", accountant="prv", units=len(unit_rows),
                        physical_batch_size=preset.batch_size)
        model, timer = expert_model(), StepTimer()
        _, stats = train_dp(model, unit_rows, settings, dp, key=b"\x01" * 32, run_id="scaling", public=None,
                            checkpoint_dir=Path(tmp) / "dp", resume=False, identity={}, placement=placement,
                            progress=timer)
        private = timer.median_step() if world.main else 0.0
        trained_dp = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        unit_tokens = statistics.mean(sum(len(r) - 1 for r in rows) for rows in unit_rows)

        texts = tiny.synthetic_texts(args.texts, seed=3, words=40)
        tokenizer = tiny.train_tokenizer(texts)
        hf = tiny.tiny_flexolmo(tokenizer, hidden_size=cfg.hidden_size, layers=cfg.num_layers, heads=cfg.num_heads,
                                max_positions=512)
        lm = attacks.CausalLM.from_model(hf, tokenizer, device=placement.device, name="scaling",
                                         shard=attacks.Shard.of_process_group())
        attacks.score_texts(lm, texts[: 4 * world.size], batch_size=16)  # warm-up: first-call allocations
        best, cache = float("inf"), None
        for _ in range(args.repeats):
            world.barrier()
            t = time.perf_counter()
            cache = attacks.score_texts(lm, texts, batch_size=16)
            best = min(best, time.perf_counter() - t)
        scored_tokens = int(cache.token_offsets[-1])
        if world.main:
            shared, expert = forward_flops_per_token(cfg, preset.seq_len)
            tokens = preset.batch_size * preset.seq_len
            # as benchmarks/training_throughput.py: frozen weights forward + input gradients (2x), the frozen
            # expert 2x, the trained expert 3x (its weight gradients too)
            flops = (2 * shared + 2 * expert + 3 * expert) * tokens
            results |= {
                "expert_training": {"seconds_per_step": plain, "tokens_per_second": tokens / plain,
                                    "flops_per_second": flops / plain, "fraction_of_matmul_peak": flops / plain / peak},
                "dp_training": {"seconds_per_step": private, "mean_units_per_step": stats["mean_batch_size"],
                                "tokens_per_second": stats["mean_batch_size"] * unit_tokens / private,
                                "dp_over_non_dp_step_time": private / plain},
                "audit_scoring": {"seconds": best, "texts": len(texts), "tokens": scored_tokens,
                                  "tokens_per_second": scored_tokens / best},
            }
            out.mkdir(parents=True, exist_ok=True)
            save_file(trained, str(out / "non_dp.safetensors"))
            save_file(trained_dp, str(out / "dp.safetensors"))
            save_file({"logprobs": torch.from_numpy(cache.logprobs_flat), "mu": torch.from_numpy(cache.mu_flat)},
                      str(out / "scores.safetensors"))
            (out / "results.json").write_text(json.dumps(results))


def max_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--texts", type=int, default=256, help="texts scored by the audit scoring pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads-per-process", type=int, default=1)
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="the machine's CPU cores (for the peak)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    load_before = os.getloadavg()
    torch.set_num_threads(1)
    peak_one = matmul_peak()
    torch.set_num_threads(args.cores)
    peak_all = matmul_peak()
    runs, reference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        def launch(n: int, threads: int, name: str) -> dict:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--standalone",
                       __file__, "--worker", "--out", f"{tmp}/{name}", "--preset", args.preset, "--steps",
                       str(args.steps), "--device", args.device, "--texts", str(args.texts), "--repeats",
                       str(args.repeats)]
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            run = json.loads(Path(f"{tmp}/{name}/results.json").read_text())
            if name != "1" and Path(f"{tmp}/1/results.json").is_file():
                run["max_abs_weight_difference_vs_1_process"] = {
                    part: max_difference(Path(f"{tmp}/1/{part}.safetensors"), Path(f"{tmp}/{name}/{part}.safetensors"))
                    for part in ("non_dp", "dp")} | {"after_steps": args.steps}
                run["max_abs_score_difference_vs_1_process"] = max_difference(
                    Path(f"{tmp}/1/scores.safetensors"), Path(f"{tmp}/{name}/scores.safetensors"))
            print(json.dumps({name: run}), file=sys.stderr, flush=True)
            return run

        for n in map(int, args.processes.split(",")):
            runs[n] = launch(n, args.threads_per_process, str(n))
        if args.device == "cpu" and 1 in runs:
            reference = launch(1, 2 * args.threads_per_process, "1-more-threads")
    for n, run in runs.items():
        if 1 in runs and n != 1:
            for part in ("expert_training", "dp_training", "audit_scoring"):
                run[part]["speedup_vs_1_process"] = run[part]["tokens_per_second"] / runs[1][part]["tokens_per_second"]
    print(json.dumps({
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cores": args.cores,
                    "device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device != "cpu" else None,
                    "matmul_peak_flops_1_thread": peak_one, f"matmul_peak_flops_{args.cores}_threads": peak_all,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "preset": args.preset, "steps": args.steps,
        "runs": {str(n): run for n, run in runs.items()},
        "reference_1_process_more_threads": reference and {
            "threads": reference["threads_per_process"],
            "max_abs_weight_difference_vs_1_process": reference["max_abs_weight_difference_vs_1_process"],
            "max_abs_score_difference_vs_1_process": reference["max_abs_score_difference_vs_1_process"]},
    }, indent=2))


if __name__ == "__main__":
    main()
