"""Commands that trace model output back to the owner's own documents: `trace index` and `trace MODEL_DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from flexaudit.cli._common import (
    DeviceOption,
    DtypeChoice,
    DtypeOption,
    RichProgress,
    guarded,
    out,
    placement_of,
    print_json,
)
from flexaudit.trace.spans import DEFAULT_MAX_DOCUMENTS, DEFAULT_MIN_TOKENS


class _OutputByDefault(TyperGroup):
    """`flexaudit trace MODEL_DIR ...` is short for `flexaudit trace output MODEL_DIR ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["output", *args]
        return super().parse_args(ctx, args)


trace_app = typer.Typer(
    cls=_OutputByDefault,
    no_args_is_help=True,
    help="Trace model output back to your own documents (OLMoTrace with the infini-gram engine).\n\n"
         "flexaudit trace index --data PATH --anchor DIR --out INDEX_DIR   (once, on your machine)\n\n"
         "flexaudit trace MODEL_DIR --index INDEX_DIR (--text TEXT | --prompt TEXT)",
)


@trace_app.command("index")
def index_cmd(
    data: Annotated[Path, typer.Option(help="Your documents: .txt folder, .jsonl, .csv, .parquet or builtin:NAME.")],
    anchor: Annotated[Path, typer.Option(help="The anchor whose tokenizer your models use.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Index directory to create (stays on this machine).")],
    hashes_only: Annotated[bool, typer.Option(help="Name documents only by keyed hash, not by id.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="Indexer threads (default: up to 4).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing index directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the index manifest as JSON only.")] = False,
) -> None:
    """Index your own documents, locally, with the anchor's tokenizer. The index is private: never share it."""
    from flexaudit.trace import build_index

    def run():
        with RichProgress() as progress:
            return build_index(data, anchor, out_dir, hashes_only=hashes_only, threads=threads, overwrite=force,
                               progress=progress)

    built = guarded(run)
    if as_json:
        print_json({"directory": str(built.directory), **built.info})
        return
    info = built.info
    out.print(f"trace index: {built.directory}  ({built.documents:,} documents, {built.tokens:,} tokens, "
              f"documents named by {'keyed hash only' if info['documents']['keys'] == 'hashes' else 'id'})", markup=False)
    out.print(f"  tokenizer of anchor {info['anchor']['root_digest']}", markup=False)
    s = info["build_seconds"]
    out.print(f"  built in {s['tokenise'] + s['suffix_array']:.1f} s (tokenise {s['tokenise']:.1f} s, "
              f"suffix array {s['suffix_array']:.1f} s)")
    out.print("  private: it holds the full text of your documents; keep it on this machine and never share it")


@trace_app.command("output")
def output_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Anchor, merged model, FlexOlmo directory, or expert package (with --anchor).")],
    index: Annotated[Path, typer.Option(help="Your trace index (from `flexaudit trace index`).")],
    text: Annotated[Optional[str], typer.Option(help="Trace this text.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Let the model continue this prompt, then trace the output.")] = None,
    min_tokens: Annotated[int, typer.Option(help="Shortest span reported, in tokens.")] = DEFAULT_MIN_TOKENS,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate (with --prompt).")] = 64,
    exclude: Annotated[list[str], typer.Option("--exclude", help="Expert to switch off (repeatable).")] = [],
    anchor: Annotated[Optional[Path], typer.Option(help="The anchor, when MODEL_DIR is an expert package.")] = None,
    max_documents: Annotated[int, typer.Option(help="Documents listed per span (totals are always complete).")] = DEFAULT_MAX_DOCUMENTS,
    sample: Annotated[bool, typer.Option(help="Sample (top-p 0.95) instead of greedy decoding.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    reveal: Annotated[bool, typer.Option(help="Also print your documents' text around each match.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Find the spans of a text, or of the model's output, that occur verbatim in your indexed documents.

    Each span lists how often it occurs, in which documents, and which experts the router sent its tokens to.
    Your documents' own text is printed only with --reveal.
    """
    from flexaudit.trace import trace_output

    result = guarded(lambda: trace_output(
        model_dir, index, text=text, prompt=prompt, anchor_dir=anchor, exclude=exclude, min_tokens=min_tokens,
        max_documents=max_documents, max_new_tokens=max_new_tokens, sample=sample, seed=seed, reveal=reveal,
        placement=placement_of(device, dtype),
    ))
    if as_json:
        print_json({"model": str(model_dir), "excluded": exclude, **result.as_dict()})
        return
    _print_result(result)


def _print_result(result) -> None:
    idx = result.index
    own = result.tokens - result.prompt_tokens
    what = (f"{result.tokens} tokens ({result.prompt_tokens} from the prompt, {own} generated)" if result.prompt_tokens
            else f"{result.tokens} tokens")
    out.print(f"traced {what} against {idx['directory']} ({idx['documents']:,} documents, {idx['tokens']:,} tokens)",
              markup=False)
    if result.experts:
        out.print(f"experts: {', '.join(result.experts)}", markup=False)
    out.print(json.dumps(result.text, ensure_ascii=False), markup=False)
    if not result.spans:
        out.print(f"no span of {result.min_tokens} or more tokens occurs in the indexed documents")
        return
    part = "generated tokens" if result.prompt_tokens else "tokens"
    out.print(f"{len(result.spans)} span(s) of at least {result.min_tokens} tokens occur verbatim in the indexed "
              f"documents; they cover {result.covered_tokens} of {own} {part} ({result.coverage:.0%})")
    for n, span in enumerate(result.spans, start=1):
        generated = f", {span.generated_tokens} generated" if span.generated_tokens is not None else ""
        times = "1 time" if span.occurrences == 1 else f"{span.occurrences:,} times"
        docs = "1 document" if span.document_count == 1 else f"{span.document_count:,} documents"
        routed = ", ".join(f"{e.name} {e.weight:.0%}" for e in span.experts if e.weight >= 0.005)
        out.print(f"\nspan {n}: tokens {span.start}-{span.end} ({span.tokens} tokens{generated}), occurs {times} "
                  f"in {docs}" + (f"; routing weight: {routed}" if routed else ""), markup=False)
        if span.text is not None:
            out.print(f"  {json.dumps(span.text, ensure_ascii=False)}", markup=False)
        listed = ", ".join(f"{_name(d)} ({d.occurrences})" for d in span.documents)
        more = span.document_count - len(span.documents)
        out.print(f"  documents: {listed}" + (f" and {more:,} more" if more > 0 else ""), markup=False)
        for d in span.documents:
            if d.context_before is not None:
                shown = f"{d.context_before}[[{span.text or ''}]]{d.context_after}"
                out.print(f"    {_name(d)}: {json.dumps(shown, ensure_ascii=False)}", markup=False)


def _name(doc) -> str:
    return doc.id if doc.id is not None else f"hmac:{doc.hash[:16]}"


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
