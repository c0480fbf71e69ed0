"""Commands of the training core: anchor, expert, merge, eval, generate, demo."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flexaudit.cli._common import (
    DeviceOption,
    DtypeChoice,
    DtypeOption,
    FsdpOption,
    RichProgress,
    err,
    guarded,
    out,
    placement_of,
    print_json,
    processes,
)

anchor_app = typer.Typer(help="Create the public anchor model every expert is trained against.", no_args_is_help=True)
expert_app = typer.Typer(help="Train an expert on your own data and package it for sharing.", no_args_is_help=True)


class PresetChoice(str, Enum):
    tiny = "tiny"
    mini = "mini"
    small = "small"
    medium = "medium"


class UnitChoice(str, Enum):
    document = "document"
    subject = "subject"


class AccountantChoice(str, Enum):
    prv = "prv"
    rdp = "rdp"


class RouterInitChoice(str, Enum):
    hidden_mean = "hidden-mean"
    embedder = "embedder"
    random = "random"


@anchor_app.command("train")
def anchor_train(
    corpus: Annotated[list[Path], typer.Option("--corpus", help="Public training text (repeatable): .txt folder, .jsonl, .csv, .parquet.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Anchor directory to create.")],
    preset: Annotated[PresetChoice, typer.Option(help="Model size: tiny (tests), mini (the demo), small (4 layers, 128-token context) or medium (twice the width of small).")] = PresetChoice.small,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and data order.")] = 0,
    router_init: Annotated[RouterInitChoice, typer.Option(help="How the public router row is made.")] = RouterInitChoice.hidden_mean,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint of an interrupted run.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing anchor directory.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
    fsdp: FsdpOption = False,
) -> None:
    """Train a small OLMo-2-style public model and its byte-level BPE tokenizer from scratch (stored in --dtype).
    Under `torchrun --nproc-per-node N` the steps run data-parallel over N processes."""
    from flexaudit.moe.anchor import train_anchor

    def run():
        placement = placement_of(device, dtype)
        with processes(placement), RichProgress() as progress:
            return train_anchor(
                corpus, out_dir, preset=preset.value, steps=steps, seed=seed, router_init=router_init.value,
                resume=resume, overwrite=force, placement=placement, progress=progress, fsdp=fsdp,
            )

    result = guarded(run)
    t = result["training"]
    out.print(f"anchor: {result['out']}  ({result['parameters']:,} parameters, {t.tokens:,} tokens, final loss {t.final_loss:.3f})")
    out.print(f"root digest: {result['root_digest']}")
    out.print(f"owner-side files (checkpoints, holdout text): {result['local']}")


@anchor_app.command("import")
def anchor_import(
    hf_dir: Annotated[Path, typer.Argument(help="Local checkpoint with its tokenizer: dense OLMo-2, 1-expert FlexOlmo, or an N-expert FlexOlmo pool / 2-expert owner checkpoint (with --public-expert).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Anchor directory to create.")],
    public_expert: Annotated[Optional[int], typer.Option(help="From a checkpoint with several experts: the slot whose FFN and router row are the public anchor's (usually 0).")] = None,
    public_data: Annotated[Optional[Path], typer.Option(help="Public text to derive a new public router row from.")] = None,
    router_init: Annotated[RouterInitChoice, typer.Option(help="How the public router row is made (with --public-data).")] = RouterInitChoice.hidden_mean,
    force: Annotated[bool, typer.Option(help="Replace an existing anchor directory.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Store a local checkpoint (or a pool's shared weights and public expert) as a 1-expert FlexOlmo anchor
    with its root digest; weights are copied bit for bit in their stored dtype."""
    from flexaudit.moe.anchor import import_anchor

    result = guarded(lambda: import_anchor(hf_dir, out_dir, public_expert=public_expert, public_data=public_data,
                                           router_init=router_init.value, overwrite=force,
                                           placement=placement_of(device, dtype)))
    source = (f"; expert {public_expert} of {result['experts_in_source']}, {result['layout']} layout"
              if result["experts_in_source"] > 1 else "")
    out.print(f"anchor: {result['out']}  ({result['parameters']:,} parameters, {result['dtype']}{source})")
    out.print(f"root digest: {result['root_digest']}")


@expert_app.command("train")
def expert_train(
    anchor: Annotated[Path, typer.Option(help="The anchor directory.")],
    data: Annotated[Path, typer.Option(help="Your data: .txt folder, .jsonl, .csv or .parquet.")],
    name: Annotated[str, typer.Option(help="The expert's name in merged models.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Package directory to create (what you share).")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per sequence (default: the anchor's context).")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed for the split and data order.")] = 0,
    holdout_fraction: Annotated[float, typer.Option(help="Share of documents held out (non-members for audits).")] = 0.1,
    subject_field: Annotated[Optional[str], typer.Option(help="Field naming the data subject of each record.")] = None,
    router_init: Annotated[RouterInitChoice, typer.Option(help="How the expert's router row starts.")] = RouterInitChoice.hidden_mean,
    router_bias: Annotated[bool, typer.Option(help="Train the method's negative router bias (dropped at merge).")] = False,
    public_data: Annotated[Optional[Path], typer.Option(help="Public text whose rows teach only the router where the public expert is better.")] = None,
    anchor_weight: Annotated[float, typer.Option(help="With --public-data: weight of the term that keeps the expert's output close to the public FFN's on public rows (measured default, see README).")] = 1.0,
    dp: Annotated[bool, typer.Option("--dp", help="Train with DP-SGD (then --batch-size is the expected units per step).")] = False,
    target_epsilon: Annotated[Optional[float], typer.Option(help="With --dp: the epsilon to reach after --steps (noise is derived).")] = None,
    noise_multiplier: Annotated[Optional[float], typer.Option(help="With --dp: the noise multiplier sigma (epsilon is derived).")] = None,
    delta: Annotated[Optional[float], typer.Option(help="With --dp: delta (default: the largest power of ten at most 1/(10 N), at most 1e-5).")] = None,
    max_grad_norm: Annotated[float, typer.Option(help="With --dp: per-unit clipping norm C.")] = 1.0,
    privacy_unit: Annotated[UnitChoice, typer.Option(help="With --dp: one document, or every record of one data subject.")] = UnitChoice.document,
    accountant: Annotated[AccountantChoice, typer.Option(help="With --dp: the privacy accountant.")] = AccountantChoice.prv,
    budget: Annotated[Optional[float], typer.Option(help="Cap on the total epsilon spent on this dataset, across runs (the ledger).")] = None,
    owner: Annotated[str, typer.Option(help="Your name in the privacy ledger.")] = "local",
    canaries: Annotated[int, typer.Option(help="Canaries with random secrets to generate (each planted with probability 1/2).")] = 0,
    canary_repeats: Annotated[int, typer.Option(help="Copies of each planted canary.")] = 1,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 50,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint of an interrupted run.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing package directory.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
    fsdp: FsdpOption = False,
) -> None:
    """Train an expert against the frozen anchor; write the shareable package (in the anchor's dtype) and keep
    the rest local. Under `torchrun --nproc-per-node N` the steps (DP-SGD included) run data-parallel over N
    processes and rank 0 alone writes."""
    from flexaudit.errors import InputError
    from flexaudit.moe.expert import ExpertOptions
    from flexaudit.privacy.expert_training import DPOptions, train_expert

    def run():
        if not dp and (target_epsilon is not None or noise_multiplier is not None):
            raise InputError("--target-epsilon and --noise-multiplier need --dp")
        dp_options = DPOptions(
            target_epsilon=target_epsilon, noise_multiplier=noise_multiplier, delta=delta, max_grad_norm=max_grad_norm,
            unit=privacy_unit.value, accountant=accountant.value, budget=budget,
        ) if dp else None
        if budget is not None and not dp:
            raise InputError("--budget caps a DP run's epsilon: add --dp (a run without DP has no epsilon to cap)")
        options = ExpertOptions(
            steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed, holdout_fraction=holdout_fraction,
            router_init=router_init.value, router_bias=router_bias, anchor_weight=anchor_weight,
            checkpoint_every=checkpoint_every, dp=dp_options,
            canaries=canaries, canary_repeats=canary_repeats, owner=owner,
        )
        placement = placement_of(device, dtype)
        with processes(placement), RichProgress() as progress:
            return train_expert(anchor_dir=anchor, data=data, name=name, out=out_dir, options=options,
                                subject_field=subject_field, public_data=public_data, resume=resume,
                                overwrite=force, placement=placement, progress=progress, fsdp=fsdp)

    trained = guarded(run)
    m = trained.manifest
    out.print(f"expert {m['name']!r}: {trained.package}")
    out.print(f"  trained {m['training']['steps']} steps on {m['split']['members']['count']} member documents "
              f"({m['split']['holdout']['count']} held out), final loss {m['training']['final_loss']:.3f}")
    out.print(f"  privacy: {m['privacy']['statement']}")
    out.print(f"  content root digest: {m['content_root_digest']}")
    out.print(f"  owner-only files (checkpoints, split text): {trained.local}")


@expert_app.command("import")
def expert_import(
    source: Annotated[Path, typer.Argument(help="An N-expert FlexOlmo pool, or an owner's 2-expert checkpoint (public + own), made by any tool.")],
    anchor: Annotated[Path, typer.Option(help="The anchor the expert was trained against (flexaudit anchor import).")],
    expert: Annotated[int, typer.Option(help="The slot of the expert to import.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Package directory to create.")],
    name: Annotated[Optional[str], typer.Option(help="The expert's name (default: the checkpoint's, or expert-K).")] = None,
    public_expert: Annotated[int, typer.Option(help="The slot holding the anchor's public FFN and router row.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing package directory.")] = False,
) -> None:
    """Write one expert of a checkpoint made elsewhere as a standard package, after checking every shared
    tensor is the anchor's (exit 3 naming the first that differs)."""
    from flexaudit.moe.foreign import import_expert

    result = guarded(lambda: import_expert(source, anchor_dir=anchor, expert=expert, out=out_dir, name=name,
                                           public_expert=public_expert, overwrite=force))
    m = result["manifest"]
    out.print(f"expert {m['name']!r}: {result['package']}")
    out.print(f"  imported {m['source']['from']} ({result['layout']} layout, {m['source']['stored_dtype']}); "
              f"{m['source']['shared_tensors_verified_identical']} shared tensors equal the anchor's")
    out.print(f"  source root digest: {m['source']['root_digest']}")
    out.print(f"  privacy: {m['privacy']['statement']}")
    out.print("  no training split was recorded: audit it with --members and --nonmembers")


def merge_cmd(
    anchor: Annotated[Path, typer.Option(help="The anchor every expert was trained on.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Merged checkpoint directory to create.")],
    experts: Annotated[Optional[list[Path]], typer.Argument(help="Expert package directories.")] = None,
    pool: Annotated[Optional[Path], typer.Option(help="Merge the experts admitted to this pool registry instead.")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Experts mixed per token (default: measured best, see README).")] = None,
    tune_router: Annotated[bool, typer.Option(help="Tune the router rows jointly on text sampled from each expert (no private data).")] = False,
    public_data: Annotated[Optional[Path], typer.Option(help="With --tune-router: public text for the public expert's row.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing directory.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Merge expert packages (or a pool's admitted experts) into one Hugging Face FlexOlmo checkpoint in the
    anchor's dtype, without retraining the experts (--device/--dtype: where --tune-router runs)."""
    from flexaudit.errors import InputError
    from flexaudit.moe.merge import merge

    def run():
        packages = list(experts or [])
        if (pool is None) == (not packages):
            raise InputError("give expert package directories or --pool DIR (one of the two)")
        if pool is not None:
            from flexaudit.pool import pool_members

            packages = pool_members(pool)
            if not packages:
                raise InputError(f"the pool {pool} has no admitted experts to merge")
        with RichProgress() as progress:
            return merge(anchor, packages, out_dir, top_k=top_k, tune_router=tune_router, public_data=public_data,
                         overwrite=force, placement=placement_of(device, dtype), progress=progress)

    merged = guarded(run)
    out.print(f"merged model: {merged.directory}  (experts: {', '.join(merged.expert_names)}; top-{merged.info['top_k']})")
    out.print("load it with transformers.AutoModelForCausalLM.from_pretrained(dir)")


def eval_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Anchor, merged model, plain FlexOlmo directory, or expert package (with --anchor).")],
    data: Annotated[list[str], typer.Option("--data", help="NAME=PATH of held-out documents (repeatable).")],
    exclude: Annotated[list[str], typer.Option("--exclude", help="Expert to switch off (repeatable).")] = [],
    anchor: Annotated[Optional[Path], typer.Option(help="The anchor, when MODEL_DIR is an expert package.")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass, at most.")] = 16,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass, at most (halved on out-of-memory).")] = 16_384,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Per-domain perplexity on held-out data."""
    from flexaudit.data import load_documents
    from flexaudit.errors import InputError
    from flexaudit.moe.evaluate import perplexity
    from flexaudit.moe.merge import open_model
    from flexaudit.moe.tokenizer import load_tokenizer

    def run():
        placement = placement_of(device, dtype)  # an unusable device is refused before anything is read
        domains = {}
        for item in data:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise InputError(f"--data {item!r} must be NAME=PATH")
            domains[name] = [d.text for d in load_documents(Path(path))]
        model, names, tokenizer_dir = open_model(model_dir, anchor_dir=anchor, exclude=exclude, placement=placement)
        tokenizer = load_tokenizer(tokenizer_dir)
        with RichProgress() as progress:
            scores = {n: perplexity(model, tokenizer, texts, batch_size=batch_size, batch_tokens=batch_tokens,
                                    progress=progress, description=f"eval {n}")
                      for n, texts in domains.items()}
        return names, scores

    names, scores = guarded(run)
    if as_json:
        print_json({"model": str(model_dir), "experts": names, "excluded": exclude,
                    "domains": {n: s.as_dict() for n, s in scores.items()}})
        return
    table = Table(title=f"{model_dir}  (experts: {', '.join(names)})")
    for col in ("domain", "documents", "tokens", "perplexity"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for n, s in scores.items():
        table.add_row(n, f"{s.documents:,}", f"{s.tokens:,}", f"{s.perplexity:.2f}")
    out.print(table)


def generate_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Anchor, merged model or plain FlexOlmo directory.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    exclude: Annotated[list[str], typer.Option("--exclude", help="Expert to switch off (repeatable).")] = [],
    anchor: Annotated[Optional[Path], typer.Option(help="The anchor, when MODEL_DIR is an expert package.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    sample: Annotated[bool, typer.Option(help="Sample (top-p 0.95) instead of greedy decoding.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Continue a prompt with the model (through transformers, with a KV cache)."""
    from flexaudit.moe.generation import generate

    text = guarded(lambda: generate(model_dir, prompt, exclude=exclude, anchor_dir=anchor,
                                    max_new_tokens=max_new_tokens, sample=sample, seed=seed,
                                    placement=placement_of(device, dtype)))
    out.print(text, markup=False)


def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where every artifact goes.")] = Path("demo-output"),
    quick: Annotated[bool, typer.Option(help="The short version: fewer documents, steps and audited members (what the tests run).")] = False,
    preset: Annotated[Optional[PresetChoice], typer.Option(help="Model size instead of the plan's (mini).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON only.")] = False,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = DtypeChoice.float32,
    jobs: Annotated[Optional[int], typer.Option(help="Worker processes for the steps that run side by side (each owner's training and audit, the evaluation). Default: one per core, up to 4, on a CPU; 1 runs everything in this process.")] = None,
) -> None:
    """The whole main job on built-in data: anchor, experts (one with DP), audits, reports, the gate, the pool,
    merge, and the method's table with opt-out. A rerun in the same --workdir replaces its earlier outputs."""
    from flexaudit.demo import run_demo

    def run():
        # CPU float32 unless asked: the demo's sizes, times and README figures are measured there
        placement = placement_of(device, dtype)
        with RichProgress() as progress:
            return run_demo(workdir, quick=quick, preset=preset.value if preset else None, placement=placement,
                            progress=progress, jobs=jobs)

    result = guarded(run)
    if as_json:
        print_json(result.as_dict())
        return
    from flexaudit.cli.render import print_demo

    print_demo(result)


def register(app: typer.Typer) -> None:
    app.add_typer(anchor_app, name="anchor")
    app.add_typer(expert_app, name="expert")
    app.command("merge")(merge_cmd)
    app.command("eval")(eval_cmd)
    app.command("generate")(generate_cmd)
    app.command("demo")(demo_cmd)


__all__ = ["register", "err"]
