"""What tests/distributed/test_torchrun.py runs under `torchrun --nproc-per-node 2` (gloo): the library's training
entry points on two processes, the DP noise of one shared step, and the progress and results of sharded scoring
and decoding. Rank 0 writes results.json; the test compares everything with single-process runs made in the test
process.

    python -m torch.distributed.run --nproc-per-node 2 ... torchrun_job.py WORKDIR ANCHOR DATA PUBLIC
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

torch.set_num_threads(1)

from flexaudit.moe import distributed  # noqa: E402
from flexaudit.moe.anchor import train_anchor  # noqa: E402
from flexaudit.moe.expert import upcycle  # noqa: E402
from flexaudit.moe.model import FlexOlmo, ModelConfig  # noqa: E402
from flexaudit.privacy.dpsgd import DPSettings, PerSampleEngine, private_gradient, shared_private_gradient  # noqa: E402
from flexaudit.privacy.expert_training import train_expert  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from job_settings import ANCHOR_STEPS, DP, NON_DP  # noqa: E402


def noise_of_one_shared_step(world: distributed.World) -> dict:
    """A DP step in which no unit is sampled: the summed gradient is the noise alone, (noise) / (q N). Returns its
    measured standard deviation times q N, the expected sigma C, and whether every rank's gradient equals the
    single-process step's (same generator seed) bit for bit."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=256, num_layers=2, num_heads=4, max_seq_len=16)
    model = upcycle(FlexOlmo(cfg), torch.zeros(2, 64), router_bias=False)
    model.freeze_anchor()
    trainable = [p for p in model.parameters() if p.requires_grad]
    dp = DPSettings(noise_multiplier=1.3, sample_rate=0.01, max_grad_norm=0.7, delta=1e-5, unit="document",
                    accountant="prv", units=1000)
    engine = PerSampleEngine(model)
    shared, single = [], []
    for step in range(3):
        noise = torch.Generator().manual_seed(100 + step)
        shared_private_gradient(engine, [], [], dp, noise, trainable, [], 0, world=world)
        shared.append(torch.cat([p.grad.reshape(-1) for p in trainable]) * dp.expected_batch_size)
        noise = torch.Generator().manual_seed(100 + step)
        private_gradient(engine, [], [], dp, noise, trainable, [], 0)  # what one process adds
        single.append(torch.cat([p.grad.reshape(-1) for p in trainable]) * dp.expected_batch_size)
    engine.close()
    shared, single = torch.cat(shared), torch.cat(single)
    rank0 = world.broadcast_(shared.clone())
    differs = world.all_reduce_(torch.tensor([float((shared != rank0).sum() + (shared != single).sum())]))
    return {"measured_std": float(shared.std()), "sigma_c": dp.noise_multiplier * dp.max_grad_norm,
            "coordinates": shared.numel(), "coordinates_differing_from_rank0_or_one_process": int(differs.item())}


class Recorder:
    """A progress object that records each task's total and what it was advanced by."""

    def __init__(self) -> None:
        self.tasks: list[dict] = []

    def task(self, description: str, total: int | None = None):
        record = {"total": total, "items": 0, "tokens": 0}
        self.tasks.append(record)

        class _Task:
            def advance(self, n: int = 1, **fields) -> None:
                record["items"] += n
                record["tokens"] += int(fields.get("tokens", 0))

            def close(self) -> None:
                pass

        return _Task()


def sharded_progress() -> dict:
    """Scoring and decoding split over the processes: every process's bar advances by the whole job, as one
    process's would, and the results are one process's."""
    import attacks
    from attacks import testing as tiny

    texts = tiny.synthetic_texts(40, seed=5, words=30)
    tokenizer = tiny.train_tokenizer(texts)
    torch.manual_seed(0)
    model = tiny.tiny_flexolmo(tokenizer)
    runs = {}
    for name, shard in (("two", attacks.Shard.of_process_group()), ("one", None)):
        lm = attacks.CausalLM.from_model(model, tokenizer, device="cpu", shard=shard)
        progress = Recorder()
        cache = attacks.score_texts(lm, texts, batch_size=4, progress=progress)
        prompts = [tokenizer(t)["input_ids"][:6] for t in texts[:9]]
        samples = attacks.generate(lm, prompts, max_new_tokens=5, sampling=attacks.PAPER_SAMPLING,
                                   seeds=list(range(9)), batch_size=2, progress=progress)
        runs[name] = {"tasks": progress.tasks, "logprobs": cache.logprobs_flat.tolist(),
                      "samples": [s.tolist() for s in samples]}
    return {"tasks": runs["two"]["tasks"], "same_tasks_as_one_process": runs["two"]["tasks"] == runs["one"]["tasks"],
            "same_results_as_one_process": all(runs["two"][k] == runs["one"][k] for k in ("logprobs", "samples"))}


def main() -> None:
    work, anchor, data, public = (Path(a) for a in sys.argv[1:5])
    dist.init_process_group("gloo")
    world = distributed.current()
    results = {"world": world.size}
    for name, options, fsdp in (("ddp", NON_DP, False), ("fsdp", NON_DP, True), ("dp", DP, False)):
        trained = train_expert(anchor_dir=anchor, data=data, name="finance", out=work / name, options=options,
                               public_data=public, home=work / f"home-{name}", fsdp=fsdp)
        results[name] = {"manifest_on_this_rank": trained.manifest["content_root_digest"]}
    results["noise"] = noise_of_one_shared_step(world)
    results["progress"] = sharded_progress()
    made = train_anchor([public], work / "anchor", preset="tiny", steps=ANCHOR_STEPS, seed=0)
    results["anchor"] = {"root_digest": made["root_digest"]}
    # every rank returned the same manifests, anchor digest and noise
    mine = json.dumps(results, sort_keys=True)
    disagree = world.all_reduce_(torch.tensor([float(world.broadcast_json(mine) != mine)]))
    results["ranks_agree"] = not disagree.item()
    if world.main:
        (work / "results.json").write_text(json.dumps(results, indent=2))
    dist.barrier()  # as flexaudit.moe.distributed.session: no rank tears the group down while another still works
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
