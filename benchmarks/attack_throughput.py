"""Throughput of the attack library (run on demand; prints one JSON object; no assertions).

    python benchmarks/attack_throughput.py [--device cpu|cuda] [--texts 128] [--threads 1] [--quick]

On a FlexOlmo model built from a config (nothing downloaded; random weights, which does not change the
cost) and synthetic texts, it measures:

1. Membership scoring: every membership attack together (target scoring pass with the Min-K%++
   moments + reference scoring pass + all seven attacks' scores from the caches) against
   a. a bare batched forward pass of both models over the same texts (same batches, same padding):
      `fraction_of_bare_forward` = bare time / our time (target: >= 0.8), and
   b. a one-text-at-a-time loop as the reference tools do (MIMIR: forward one sample, log-softmax,
      then each attack): `speedup_vs_one_at_a_time` (target: >= 10).
   The metrics (AUC bootstrap etc.) are timed separately: they do not touch the model.
2. Extraction decoding: tokens/s of batched KV-cache decoding vs one prompt at a time (same code,
   batch_size=1), greedy and with the paper's sampling.

Timings are the best of `--repeats` runs (wall clock).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attacks import CausalLM, list_attacks, run_membership, score_texts  # noqa: E402
from attacks import testing as tiny  # noqa: E402
from attacks.extraction import PAPER_SAMPLING, generate  # noqa: E402
from attacks.membership import MembershipContext, Population  # noqa: E402
from attacks.scoring import plan_rows  # noqa: E402


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def build_model(tokenizer, args, seed: int) -> CausalLM:
    from transformers import FlexOlmoConfig, FlexOlmoForCausalLM

    config = FlexOlmoConfig(vocab_size=max(args.model_vocab, len(tokenizer)), hidden_size=args.hidden,
                            intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                            num_attention_heads=args.heads, num_key_value_heads=args.heads, num_experts=2,
                            num_experts_per_tok=2, max_position_embeddings=512,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    return CausalLM.from_model(FlexOlmoForCausalLM(config).eval(), tokenizer, device=args.device, name=f"m{seed}")


def bare_forward(lm: CausalLM, texts, batch_size: int, max_length: int) -> int:
    """What every scorer must at least do: the same sorted, padded batches through the model."""
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


def one_at_a_time(target: CausalLM, reference: CausalLM, texts, max_length: int) -> np.ndarray:
    """The reference tools' loop (MIMIR-style): one text per forward, full log-softmax, then the attacks."""
    import zlib

    out = []
    with torch.inference_mode():
        for text in texts:
            per_model = []
            for lm in (target, reference):
                ids = torch.tensor([lm.encode([text])[0][:max_length]], device=lm.device)
                lp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].float(), -1)
                tok = lp.gather(-1, ids[0, 1:, None])[:, 0]
                p = lp.exp()
                mu = (p * lp).sum(-1)
                var = (p * lp.square()).sum(-1) - mu.square()
                per_model.append((tok.cpu().numpy(), mu.cpu().numpy(), var.cpu().numpy()))
            (tok, mu, var), (ref_tok, _, _) = per_model
            k = max(1, int(0.2 * tok.size))
            z = (tok - mu) / np.sqrt(np.maximum(var, 1e-12))
            out.append([tok.mean(), tok.mean() / len(zlib.compress(text.encode())), np.sort(tok)[:k].mean(),
                        np.sort(z)[:k].mean(), tok.mean() - ref_tok.mean()])
    return np.asarray(out)


def membership_scores(target_lm, reference_lm, texts, labels, batch_size, max_length):
    """Our path: two scoring passes, then every membership attack's scores (LiRA with one shadow)."""
    target = score_texts(target_lm, texts, batch_size=batch_size, max_length=max_length)
    reference = score_texts(reference_lm, texts, batch_size=batch_size, max_length=max_length, stats=False)
    idx = np.flatnonzero(~labels)
    loo = np.full(len(texts), -1)
    loo[idx] = np.arange(idx.size)
    ctx = MembershipContext(target, reference, shadows=(reference,),
                            population=Population(target.subset(idx), reference.subset(idx), loo))
    scores = {s.id: s.func(ctx, **s.defaults) for s in list_attacks("membership")}
    return target, reference, scores


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--texts", type=int, default=128)
    ap.add_argument("--words", type=int, default=48, help="words per synthetic text")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--model-vocab", type=int, default=50304, help="model vocabulary (OLMo-2 size by default)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.texts, args.words, args.hidden, args.layers, args.model_vocab, args.prompts = 32, 24, 64, 2, 4096, 8
        args.new_tokens, args.repeats = 16, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = tiny.synthetic_texts(args.texts, seed=1, words=args.words)
    tokenizer = tiny.train_tokenizer(corpus + tiny.synthetic_texts(200, seed=2, words=args.words), vocab_size=512)
    # varied lengths, as real documents: cut each text to a random number of words
    rng = np.random.default_rng(0)
    texts = [" ".join(t.split()[:int(rng.integers(args.words // 3, args.words + 1))]) for t in corpus]
    labels = np.arange(len(texts)) % 2 == 0
    target, reference = build_model(tokenizer, args, 0), build_model(tokenizer, args, 1)

    bs, ml = args.batch_size, args.max_length
    t_bare, tokens = best_of(args.repeats,
                             lambda: bare_forward(target, texts, bs, ml) + bare_forward(reference, texts, bs, ml))
    t_ours, (tc, rc, _) = best_of(args.repeats, lambda: membership_scores(target, reference, texts, labels, bs, ml))
    t_metrics, _ = best_of(1, lambda: run_membership(tc, rc, is_member=labels, shadows=[rc]))
    n_loop = min(len(texts), 32 if not args.quick else 16)  # the slow loop is timed on a subset, scaled
    t_loop, _ = best_of(1, lambda: one_at_a_time(target, reference, texts[:n_loop], ml))
    t_loop_all = t_loop * len(texts) / n_loop
    scored_tokens = tokens  # both models' tokens, as in the bare pass

    prompts = [ids[:32] if len(ids) >= 32 else ids for ids in target.encode(texts[:args.prompts])]
    decode = {}
    for label, sampling in (("greedy", None), ("paper_sampling", PAPER_SAMPLING)):
        kw = {} if sampling is None else {"sampling": sampling, "seeds": list(range(len(prompts)))}
        n = args.new_tokens
        t_b, _ = best_of(args.repeats, lambda: generate(target, prompts, max_new_tokens=n, batch_size=32, **kw))
        t_1, _ = best_of(1, lambda: generate(target, prompts, max_new_tokens=n, batch_size=1, **kw))
        n_new = len(prompts) * args.new_tokens
        decode[label] = {"batched_tokens_per_s": n_new / t_b, "one_prompt_at_a_time_tokens_per_s": n_new / t_1,
                         "speedup": t_1 / t_b}

    result = {
        "device": str(target.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "config": {k: v for k, v in vars(args).items() if k != "quick"},
        "membership": {
            "texts": len(texts), "tokens_both_models": scored_tokens, "attacks": len(list_attacks("membership")),
            "bare_forward_s": t_bare, "all_attacks_s": t_ours,
            "bare_forward_tokens_per_s": scored_tokens / t_bare, "all_attacks_tokens_per_s": scored_tokens / t_ours,
            "fraction_of_bare_forward": t_bare / t_ours, "target_fraction": 0.8,
            "one_at_a_time_s_estimated": t_loop_all, "one_at_a_time_measured_on_texts": n_loop,
            "speedup_vs_one_at_a_time": t_loop_all / t_ours, "target_speedup": 10.0,
            "metrics_s (AUC bootstrap, TPR@FPR, ROC; no model)": t_metrics,
        },
        "decoding": {"prompts": len(prompts), "new_tokens": args.new_tokens, **decode},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
