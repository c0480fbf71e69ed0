"""The public anchor: a dense model stored as a 1-expert FlexOlmo checkpoint that everyone trains against.

An anchor directory is a standard Hugging Face checkpoint (config.json, model.safetensors, tokenizer files)
plus anchor.json: its root digest over every other file, where it came from, and how the public router row
was made. Expert packages name the anchor by that digest; merge refuses an expert trained on another anchor.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from flexaudit import __version__
from flexaudit.data import Document, load_documents
from flexaudit.data.split import split_documents
from flexaudit.digest import root_digest, text_sha256
from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json, staged_directory
from flexaudit.moe.checkpoint import (
    checkpoint_dtype,
    expert_layout,
    read_json,
    read_model_config,
    read_slots,
    refuse_pickle,
    tensor_names,
    write_hf_checkpoint,
)
from flexaudit.moe import distributed
from flexaudit.moe.device import CPU_FLOAT32, Placement, dtype_name
from flexaudit.moe.model import INIT_STD, FlexOlmo, ModelConfig
from flexaudit.moe.router_init import DEFAULT_ROUTER_INIT, router_rows
from flexaudit.moe.tokenizer import encode_documents, load_tokenizer, tokenizer_from_json, train_tokenizer
from flexaudit.moe.training import PackedStream, TrainSettings, train
from flexaudit.progress import NULL_PROGRESS, Progress

ANCHOR_FILE = "anchor.json"
ANCHOR_FORMAT = "flexaudit-anchor/1"


@dataclass(frozen=True)
class Preset:
    """A model size and the training schedule that fits it on a 2-core CPU."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    # None: every weight from N(0, 0.02), as OLMo 2 draws them. A number: the token embeddings from N(0, that)
    # instead, as OLMo-core's llama init and nn.Embedding's default do. With OLMo 2's reordered norm every
    # sublayer adds an output of RMS about 1 to the residual, so a 0.02 embedding is a fiftieth of what the first
    # FFN reads: a 7B model trained on trillions of tokens grows it, a 2-layer one trained a few hundred steps does
    # not (the demo's anchor had embedding RMS 0.05 after 250 steps), and the FFN, all an expert trains, then
    # hardly sees which token it is on. Measured on the full demo (mini, same plan; session 20): 1.0 took the
    # anchor's public held-out perplexity from 52.3 to 43.6 and its experts from 3.3x / 10.4x / 8.1x better than
    # it on code / clinical / finance to 4.1x / 20.6x / 12.9x.
    embedding_std: float | None = None

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            max_seq_len=self.seq_len,
            pad_token_id=0,
            eos_token_id=1,
        )

    def settings(self, *, steps: int | None, seed: int) -> TrainSettings:
        steps = steps or self.steps
        return TrainSettings(
            steps=steps,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            lr=self.lr,
            warmup_steps=max(1, min(100, steps // 10)),
            weight_decay=0.1,
            seed=seed,
        )


PRESETS = {
    # tests: trains in seconds
    "tiny": Preset(vocab_size=512, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=4, seq_len=64, steps=150, batch_size=16, lr=3e-3),
    # the demo's: narrow, 2 layers, a 64-token context and large steps; learns the built-in domains in seconds
    "mini": Preset(vocab_size=1024, hidden_size=96, intermediate_size=288, num_layers=2, num_heads=4, seq_len=64, steps=400, batch_size=32, lr=5e-3,
                   embedding_std=1.0),
    # the demo's until issue 14's speed work (1,031 s for the whole demo on 2 cores at 241 GFLOP/s)
    "small": Preset(vocab_size=2048, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, seq_len=128, steps=900, batch_size=16, lr=2e-3),
    # twice the width of small (measured on 2 cores: the demo 1,223 s against 512 s with small)
    "medium": Preset(vocab_size=2048, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4, seq_len=128, steps=900, batch_size=16, lr=2e-3),
}


@dataclass
class Anchor:
    directory: Path
    model: FlexOlmo | None  # in the placement it was loaded with; None when loaded without weights
    tokenizer: object
    info: dict
    stored_dtype: torch.dtype = torch.float32  # the dtype of its weights on disk: packages and pools keep it
    model_config: ModelConfig | None = None

    @property
    def root_digest(self) -> str:
        return self.info["root_digest"]

    @property
    def config(self) -> ModelConfig:
        return self.model.config if self.model is not None else self.model_config


def software_versions() -> dict:
    import tokenizers
    import transformers

    return {
        "flexaudit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _load_corpus(paths: list[Path]) -> list[Document]:
    if not paths:
        raise InputError("no corpus given: pass --corpus PATH at least once")
    docs: list[Document] = []
    for p in paths:
        docs.extend(load_documents(p))
    return docs


def _publish(directory: Path, model: FlexOlmo, tokenizer_dir: Path, info: dict, *, overwrite: bool) -> str:
    """Write the checkpoint and anchor.json into `directory` atomically; returns the root digest."""
    if directory.exists() and not overwrite:
        raise InputError(f"{directory} already exists: choose another --out or pass --force to replace it")
    with staged_directory(directory, replace=overwrite) as tmp:
        write_hf_checkpoint(tmp, model, tokenizer_from=tokenizer_dir)
        info = {**info, "format": ANCHOR_FORMAT, "root_digest": root_digest(tmp, exclude=[ANCHOR_FILE])}
        atomic_write_json(tmp / ANCHOR_FILE, info)
    return info["root_digest"]


def _set_public_row(model: FlexOlmo, tokenizer, texts: list[str], method: str, seed: int) -> None:
    rows = router_rows(method, model, tokenizer, texts, seed=seed)  # (L, H)
    with torch.no_grad():
        for layer, row in zip(model.model.layers, rows):
            layer.mlp.gate.rows[0].weight.copy_(row[None])


def train_anchor(
    corpus: list[Path],
    out: Path,
    *,
    preset: str = "small",
    steps: int | None = None,
    seed: int = 0,
    router_init: str = DEFAULT_ROUTER_INIT,
    resume: bool = False,
    overwrite: bool = False,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
    fsdp: bool = False,
) -> dict:
    """Train a tokenizer and a small OLMo-2-style model from scratch on public text, on `placement`'s device;
    with a half-precision dtype it trains in mixed precision and the anchor is stored in that dtype. Under
    torchrun the steps run data-parallel (sharded with `fsdp`; flexaudit.moe.training.train) and rank 0 alone
    trains the tokenizer and writes the anchor; every rank returns the same result."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    world = distributed.current()
    progress = world.progress(progress)
    distributed.check_fsdp(world, fsdp)
    p = PRESETS[preset]
    docs = _load_corpus(corpus)
    split = split_documents(docs, seed=seed, holdout_fraction=0.05)
    local = local_dir(out)
    tokenizer_dir = local / "tokenizer"
    made: dict = {}

    def tokenizer_on_main() -> str:
        # rank 0 alone checks the output, writes and trains the tokenizer; the others get it as JSON
        if out.exists() and not overwrite and not resume:
            raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")
        local.mkdir(parents=True, exist_ok=True)
        if resume and (tokenizer_dir / "tokenizer.json").is_file():
            made["tokenizer"] = load_tokenizer(tokenizer_dir)
        else:
            progress.note(f"training a {p.vocab_size}-token byte-level BPE tokenizer on {len(split.members)} documents")
            made["tokenizer"] = train_tokenizer((d.text for d in split.members), vocab_size=p.vocab_size)
            made["tokenizer"].save_pretrained(str(tokenizer_dir))
        return made["tokenizer"].backend_tokenizer.to_str() if world.distributed else ""

    serialized = world.on_main(tokenizer_on_main)
    tokenizer = made["tokenizer"] if "tokenizer" in made else tokenizer_from_json(serialized)
    torch.manual_seed(seed)
    # float32: the optimizer's master weights; with fsdp in host memory, and each rank's shards on the device
    model = FlexOlmo(p.model_config(len(tokenizer)), embedding_std=p.embedding_std)
    model = model.to("cpu" if fsdp else placement.device)
    settings = p.settings(steps=steps, seed=seed)
    stream = PackedStream(
        encode_documents(tokenizer, [d.text for d in split.members]),
        seq_len=settings.seq_len,
        batch_size=settings.batch_size,
        seed=seed,
    )
    identity = {"kind": "anchor", "preset": asdict(p), "documents": text_sha256("".join(sorted(d.sha256 for d in split.members)))}
    result = train(
        model, stream, settings, checkpoint_dir=local / "checkpoints", resume=resume,
        identity=identity, placement=placement, progress=progress, description="anchor", fsdp=fsdp,
    )
    model = model.to(placement.dtype)
    info = {
        "provenance": {
            "source": "trained",
            "preset": preset,
            "documents": len(split.members),
            "holdout_documents": len(split.holdout),
            "training": {**asdict(settings), "tokens": result.tokens, "epochs": round(result.epochs, 3),
                         "final_loss": result.final_loss, "seconds": round(result.seconds, 1)},
            # how the weights were drawn (Preset.embedding_std): anchors of one preset name made before and after
            # the mini preset's N(0, 1) embeddings can be told apart
            "initialisation": {"std": INIT_STD, "token_embeddings_std": model.embedding_std},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "software": software_versions(),
            "dtype": dtype_name(placement.dtype),
            "device": str(placement.device),
        },
        "router": {"public_row": router_init, "seed": seed},
    }

    def publish() -> str:
        _set_public_row(model, tokenizer, [d.text for d in split.members], router_init, seed)
        _write_holdout(local, split.holdout)
        return _publish(out, model, tokenizer_dir, info, overwrite=overwrite or resume)

    digest = world.on_main(publish)  # rank 0 alone writes the anchor
    return {"root_digest": digest, "out": str(out), "local": str(local), "training": result, "parameters": model.num_parameters()}


def import_anchor(
    hf_dir: Path,
    out: Path,
    *,
    public_expert: int | None = None,
    public_data: Path | None = None,
    router_init: str = DEFAULT_ROUTER_INIT,
    seed: int = 0,
    overwrite: bool = False,
    placement: Placement = CPU_FLOAT32,
) -> dict:
    """Take a local checkpoint with its tokenizer as the anchor: a dense OLMo-2 or 1-expert FlexOlmo, or the
    shared weights and expert `public_expert` (its FFN and router row) of an N-expert FlexOlmo pool or an
    owner's 2-expert checkpoint. The weights are copied bit for bit in the dtype they are stored in
    (float32, bfloat16 or float16; shards and both expert layouts are read); `placement` is only used to
    compute a new public router row from `public_data`."""
    if not hf_dir.is_dir():
        raise InputError(f"checkpoint directory not found: {hf_dir}")
    refuse_pickle(hf_dir)
    hf = read_json(hf_dir / "config.json", "config.json")
    cfg = read_model_config(hf_dir)
    if cfg.num_experts > 1 and public_expert is None:
        raise InputError(
            f"{hf_dir} holds {cfg.num_experts} experts: pass --public-expert K to take expert K (usually 0, the "
            "public one) and the shared weights as the anchor"
        )
    slot = public_expert if public_expert is not None else 0
    if not 0 <= slot < cfg.num_experts:
        raise InputError(f"--public-expert {slot}: {hf_dir} has experts 0..{cfg.num_experts - 1}")
    layout = expert_layout(tensor_names(hf_dir))
    stored = checkpoint_dtype(hf_dir)
    tensors = read_slots(hf_dir, [slot], num_experts=cfg.num_experts)
    model = FlexOlmo.from_hf_state_dict(cfg.replace(num_experts=1, top_k=1), tensors).eval()
    tokenizer = load_tokenizer(hf_dir)
    if len(tokenizer) > cfg.vocab_size:
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the model only {cfg.vocab_size}")
    if public_data is not None:
        work = model.to(device=placement.device, dtype=placement.dtype)
        _set_public_row(work, tokenizer, [d.text for d in load_documents(public_data)], router_init, seed)
        model = work.to(device="cpu", dtype=stored)
        row = router_init
    elif cfg.num_experts > 1:
        row = f"expert {slot}'s router row, kept from the checkpoint"
    else:
        row = "kept from the checkpoint (zeros for a dense model: the public logit is the constant 0)"
    source = {"from_model_type": hf.get("model_type")}
    if cfg.num_experts > 1:
        source |= {"from_experts": cfg.num_experts, "public_expert": slot, "layout": layout,
                   "source_root_digest": root_digest(hf_dir)}
    info = {
        "provenance": {
            "source": "imported",
            **source,
            "dtype": dtype_name(stored),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "software": software_versions(),
        },
        "router": {"public_row": row, "seed": seed},
    }
    digest = _publish(out, model, hf_dir, info, overwrite=overwrite)
    return {"root_digest": digest, "out": str(out), "parameters": model.num_parameters(), "dtype": dtype_name(stored),
            "experts_in_source": cfg.num_experts, "layout": layout}


def local_dir(out: Path) -> Path:
    """Owner-side state next to an artifact (checkpoints, holdout text): stays on this machine, never shared."""
    return out.with_name(out.name + ".local")


def _write_holdout(local: Path, holdout: list[Document]) -> None:
    import json

    from flexaudit.fsutil import atomic_write_text

    lines = [json.dumps({"id": d.id, "text": d.text, **({"subject": d.subject} if d.subject else {})}) for d in holdout]
    atomic_write_text(local / "holdout.jsonl", "\n".join(lines) + "\n")


def verify_anchor(directory: Path) -> dict:
    """anchor.json of an anchor whose files still have the root digest it states (nothing else is loaded)."""
    if not directory.is_dir():
        raise InputError(f"anchor directory not found: {directory}")
    info = read_json(directory / ANCHOR_FILE, "anchor.json (is this an anchor made by `flexaudit anchor`?)")
    if info.get("format") != ANCHOR_FORMAT:
        raise InputError(f"{directory / ANCHOR_FILE} has format {info.get('format')!r}, expected {ANCHOR_FORMAT!r}")
    actual = root_digest(directory, exclude=[ANCHOR_FILE])
    if actual != info.get("root_digest"):
        raise IntegrityError(
            f"anchor {directory} was modified: its files hash to {actual[:19]}… but anchor.json states "
            f"{str(info.get('root_digest'))[:19]}…; restore the original anchor"
        )
    return info


def load_anchor(directory: str | Path, *, placement: Placement | None = None, weights: bool = True) -> Anchor:
    """Load and verify an anchor: its files must still have the root digest anchor.json states. The model is
    read straight into `placement` (default: on the CPU, in the dtype it is stored in); with weights=False
    only its config and tokenizer are (for checking packages against it without holding the model)."""
    from flexaudit.moe.checkpoint import load_flexolmo

    directory = Path(directory)
    info = verify_anchor(directory)
    if not weights:
        return Anchor(directory=directory, model=None, tokenizer=load_tokenizer(directory), info=info,
                      stored_dtype=checkpoint_dtype(directory), model_config=read_model_config(directory))
    model = load_flexolmo(directory, device=placement.device if placement else "cpu",
                          dtype=placement.dtype if placement else None)
    if model.config.num_experts != 1:
        raise IntegrityError(f"anchor {directory} has {model.config.num_experts} experts; an anchor has exactly 1")
    return Anchor(directory=directory, model=model, tokenizer=load_tokenizer(directory), info=info,
                  stored_dtype=checkpoint_dtype(directory))
