"""Real-size audit: a FlexOlmo with the released model's layer shapes, in bfloat16 (run on demand; prints JSON).

    python benchmarks/real_size.py [--device auto|cpu|cuda] [--layers 2] [--vocab 8192] [--texts 16]
                                   [--seq-len 128] [--repeats 2] [--workdir DIR]

The released FlexOlmo-7x7B's layers (hidden 4096, 32 heads, expert FFN 11008, RoPE theta 500k; Shi et al. 2025,
reference/flexolmo.md) with as many layers and as large a vocabulary as this machine holds: with the defaults a
3-expert pool of about 1.0B parameters (0.47B in the anchor, 0.74B in anchor + one expert), random weights from a
config, a tokenizer trained locally, nothing downloaded. Each phase runs in a fresh process so its peak memory
is its own:

  make    the pool, written by plain transformers (save_pretrained, bfloat16, sharded)
  import  `anchor import --public-expert 0` and `expert import --expert 1` (time, peak memory, bytes)
  score   the audit's scoring pass (attacks.score_texts with every statistic the membership attacks use) on
          anchor + the expert and on the anchor, against a bare forward pass of both models over the same texts
          in the same batches: tokens/s, the fraction of the bare forward, peak memory
  scale   the scoring pass on N and 2N texts: the time ratio (about 2 when the cost is linear in the texts)
  agree   anchor + the expert in bfloat16, flexaudit's own forward pass against plain transformers' on the same
          texts: the largest logit difference (the bfloat16 tolerance the README states), and float32's

Peak memory is the process's peak resident set (CPU) or torch's peak allocated memory (CUDA). Times are the best
of --repeats alternating runs. The fp32 and bf16 matrix-multiply peaks are measured in the same run, so times
compare across machines. The scoring pass does more than a forward pass: Min-K%++ needs the mean and variance of
log p over the whole vocabulary at every token (an exp over the vocabulary), which a bare forward skips.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

RELEASED = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
            "rope_theta": 500_000.0, "rms_norm_eps": 1e-6}


def _peak_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _texts(n: int) -> list[str]:
    from flexaudit.data import load_documents

    docs = sorted(load_documents("builtin:public"), key=lambda d: d.id)
    return [d.text for d in docs if len(d.text) > 1200][:n]


def phase_make(args, work: Path) -> dict:
    import torch
    from transformers import FlexOlmoConfig, FlexOlmoForCausalLM

    from flexaudit.data import load_documents
    from flexaudit.moe.tokenizer import train_tokenizer

    began = time.perf_counter()
    tokenizer = train_tokenizer((d.text for d in load_documents("builtin:public")), vocab_size=args.vocab)
    cfg = FlexOlmoConfig(vocab_size=len(tokenizer), num_hidden_layers=args.layers, num_experts=3,
                         num_experts_per_tok=2, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **{k: v for k, v in RELEASED.items()
                                                                                     if k != "rope_theta"},
                         rope_parameters={"rope_type": "default", "rope_theta": RELEASED["rope_theta"]})
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bfloat16: never a float32 copy of the pool
    with torch.device("meta"):
        model = FlexOlmoForCausalLM(cfg)
    model = model.to_empty(device="cpu")
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, 0.02)
    model.save_pretrained(work / "pool", max_shard_size="1GB")
    tokenizer.save_pretrained(str(work / "pool"))
    return {"seconds": time.perf_counter() - began, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "pool_bytes": sum(f.stat().st_size for f in (work / "pool").glob("*.safetensors")),
            "shards": len(list((work / "pool").glob("*.safetensors")))}


def phase_import(args, work: Path) -> dict:
    import torch

    from flexaudit.moe.anchor import import_anchor
    from flexaudit.moe.foreign import import_expert

    t = time.perf_counter()
    anchor = import_anchor(work / "pool", work / "anchor", public_expert=0, overwrite=True)
    t_anchor = time.perf_counter() - t
    t = time.perf_counter()
    import_expert(work / "pool", anchor_dir=work / "anchor", expert=1, out=work / "expert", overwrite=True)
    t_expert = time.perf_counter() - t
    return {"anchor_import_s": t_anchor, "expert_import_s": t_expert, "anchor_parameters": anchor["parameters"],
            "package_bytes": (work / "expert" / "expert.safetensors").stat().st_size,
            "peak_memory_bytes": _peak_bytes(torch.device("cpu"))}


def _models(args, work: Path):
    import attacks
    from flexaudit.moe.device import Placement
    from flexaudit.moe.merge import export_for_transformers

    placement = Placement.of(args.device, "bfloat16")
    exported = export_for_transformers(work / "expert", anchor_dir=work / "anchor")
    target = attacks.load_causal_lm(exported.name, device=placement.device, dtype=placement.dtype, name="target")
    reference = attacks.load_causal_lm(work / "anchor", device=placement.device, dtype=placement.dtype, name="anchor")
    return placement, exported, target, reference


def _bare_forward(lm, texts: list[str], batch_size: int, max_length: int) -> int:
    """What every scorer must at least do: the same sorted, padded batches through the model."""
    import torch

    from attacks.scoring import plan_rows

    ids = lm.encode(texts)
    rows = plan_rows([len(t) for t in ids], max_length=max_length, long_texts="truncate", stride=None)
    rows.sort(key=lambda r: r.end - r.start, reverse=True)
    tokens = 0
    with torch.inference_mode():
        for b in range(0, len(rows), batch_size):
            batch = rows[b:b + batch_size]
            width = max(r.end - r.start for r in batch)
            x = torch.zeros((len(batch), width), dtype=torch.long)
            m = torch.zeros_like(x)
            for j, r in enumerate(batch):
                x[j, :r.end - r.start] = torch.tensor(ids[r.text][r.start:r.end])
                m[j, :r.end - r.start] = 1
            lm.model(input_ids=x.to(lm.device), attention_mask=m.to(lm.device), use_cache=False).logits.sum().item()
            tokens += int(m.sum())
    return tokens


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phase_score(args, work: Path) -> dict:
    import attacks

    placement, exported, target, reference = _models(args, work)
    texts = _texts(args.texts)
    scoring = dict(batch_size=args.batch_size, max_length=args.seq_len, long_texts="truncate")
    attacks.score_texts(target, texts[:2], **scoring)  # warm-up: first-call allocations and kernel choices
    bare = ours = float("inf")
    for _ in range(args.repeats):  # alternating, best of each: a busy machine slows one run, not the minimum
        _sync(placement.device)
        t = time.perf_counter()
        tokens = _bare_forward(target, texts, args.batch_size, args.seq_len) + \
            _bare_forward(reference, texts, args.batch_size, args.seq_len)
        _sync(placement.device)
        bare = min(bare, time.perf_counter() - t)
        t = time.perf_counter()
        attacks.score_texts(target, texts, **scoring)
        attacks.score_texts(reference, texts, **scoring)
        _sync(placement.device)
        ours = min(ours, time.perf_counter() - t)
    exported.cleanup()
    return {"texts": len(texts), "tokens_scored": tokens, "bare_forward_s": bare, "scoring_s": ours,
            "bare_forward_tokens_per_s": tokens / bare, "scoring_tokens_per_s": tokens / ours,
            "fraction_of_bare_forward": bare / ours, "peak_memory_bytes": _peak_bytes(placement.device),
            "device": str(placement.device), "dtype": "bfloat16"}


def phase_scale(args, work: Path) -> dict:
    import attacks

    placement, exported, target, _ = _models(args, work)
    texts = _texts(2 * args.texts)
    scoring = dict(batch_size=args.batch_size, max_length=args.seq_len, long_texts="truncate")
    attacks.score_texts(target, texts[:2], **scoring)
    seconds = {n: float("inf") for n in (args.texts, 2 * args.texts)}
    for _ in range(args.repeats):
        for n in seconds:
            _sync(placement.device)
            t = time.perf_counter()
            attacks.score_texts(target, texts[:n], **scoring)
            _sync(placement.device)
            seconds[n] = min(seconds[n], time.perf_counter() - t)
    exported.cleanup()
    return {"seconds_by_texts": seconds, "ratio_2x_texts": seconds[2 * args.texts] / seconds[args.texts]}


def phase_agree(args, work: Path) -> dict:
    import torch

    from flexaudit.moe.checkpoint import load_flexolmo

    placement, exported, target, _ = _models(args, work)
    encoded = target.encode(_texts(4))
    width = min(args.seq_len, *map(len, encoded))  # one rectangle without padding: the texts' lengths differ
    ids = torch.tensor([t[:width] for t in encoded], device=placement.device)  # (4, width)
    out = {}
    with torch.inference_mode():
        theirs = target.model(input_ids=ids, use_cache=False).logits.float()
        ours = load_flexolmo(exported.name, device=placement.device, dtype=torch.bfloat16)(ids).float()
        out["bfloat16_max_abs_logit_diff"] = (ours - theirs).abs().max().item()
        out["bfloat16_mean_abs_logit_diff"] = (ours - theirs).abs().mean().item()
        out["max_abs_logit"] = theirs.abs().max().item()
        del ours, theirs, target
        import attacks

        target32 = attacks.load_causal_lm(exported.name, device=placement.device, dtype=torch.float32)
        theirs = target32.model(input_ids=ids, use_cache=False).logits
        ours = load_flexolmo(exported.name, device=placement.device, dtype=torch.float32)(ids)
        out["float32_max_abs_logit_diff"] = (ours - theirs).abs().max().item()
    exported.cleanup()
    return out


PHASES = {"make": phase_make, "import": phase_import, "score": phase_score, "scale": phase_scale, "agree": phase_agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (best of)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the pool here (default: a temporary one)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child process: one phase, its JSON on stdout
        print(json.dumps(PHASES[args.phase](args, args.workdir)))
        return
    import torch

    from flexaudit.moe.device import resolve_device

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="flexaudit-real-size-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {}
        for phase in PHASES:
            command = [sys.executable, __file__, "--phase", phase, "--workdir", str(work), "--device", str(device)]
            for flag in ("layers", "vocab", "texts", "seq_len", "batch_size", "repeats"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:  # the phases before it still reported
                print(f"phase {phase} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                results[phase] = {"failed": done.stderr.strip().splitlines()[-1:]}
                break
            results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps({phase: results[phase]}), file=sys.stderr, flush=True)
        from flexaudit.machine import matmul_peak

        print(json.dumps({
            "benchmark": "real_size",
            "model": {**RELEASED, "num_hidden_layers": args.layers, "vocab_size": results["make"].get("vocab_size"),
                      "experts_in_pool": 3, "pool_parameters": results["make"].get("parameters"), "dtype": "bfloat16"},
            "device": str(device), "threads": torch.get_num_threads(),
            "matmul_peak_gflops": {"float32": round(matmul_peak(device=device, dtype=torch.float32) / 1e9, 1),
                                   "bfloat16": round(matmul_peak(device=device, dtype=torch.bfloat16) / 1e9, 1)},
            **results,
        }, indent=2))
    if any("failed" in r for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
