"""Write a FlexOlmo pool the way other tools do: plain transformers, nothing of flexaudit's training code.

    python examples/write_transformers_pool.py POOL_DIR [--experts 3] [--dtype bfloat16] [--layout per-expert|fused]

A small FlexOlmo (hidden 64, 2 layers) with random weights and a tokenizer trained on the built-in public corpus,
saved with `FlexOlmoForCausalLM.save_pretrained` in shards ("per-expert" layout, what transformers writes), or as
its in-memory state dict ("fused": transformers 5's `gate_up_proj` / `down_proj` tensors, what a tool that saves
the state dict directly writes). It stands in for a pool or an owner's checkpoint you already have; README
"Auditing a model you already have" imports one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import FlexOlmoConfig, FlexOlmoForCausalLM

from flexaudit.data import load_documents
from flexaudit.moe.tokenizer import train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--layout", choices=("per-expert", "fused"), default="per-expert")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tokenizer = train_tokenizer((d.text for d in load_documents("builtin:public")), vocab_size=1024)
    config = FlexOlmoConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=4, num_experts=args.experts,
                            num_experts_per_tok=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(args.seed)
    model = FlexOlmoForCausalLM(config).to(getattr(torch, args.dtype))
    if args.layout == "per-expert":
        model.save_pretrained(args.out, max_shard_size="200KB")
    else:
        from safetensors.torch import save_file

        args.out.mkdir(parents=True)
        model.config.save_pretrained(args.out)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "model.safetensors"))
    tokenizer.save_pretrained(str(args.out))
    print(f"{args.out}: {args.experts}-expert FlexOlmo, {args.dtype}, {args.layout} layout, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(list(args.out.glob('*.safetensors')))} safetensors file(s)")


if __name__ == "__main__":
    main()
