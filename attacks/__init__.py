"""flexaudit's attack library: membership inference and training-data extraction against any local
Hugging Face causal LM, plus the metrics to report them honestly.

Model-agnostic and self-contained: it loads a checkpoint directory (safetensors only, nothing
downloaded), scores texts, decodes, and returns plain result objects with `as_dict()`. It never
prints, never exits and never imports flexaudit's training code; long work reports through an
optional progress object (`task(description, total) -> advance(n, **fields) / close()`).

    from attacks import load_causal_lm, score_texts, run_membership
    target = load_causal_lm("expert_model/")              # anchor + the expert under audit
    anchor = load_causal_lm("anchor/")                    # the frozen public reference model
    texts = members + nonmembers
    report = run_membership(score_texts(target, texts), score_texts(anchor, texts),
                            is_member=[True] * len(members) + [False] * len(nonmembers))
    report["FA-MIA-REF"].auc, report.as_dict()

    discoverable_extraction(target, members, prefix_len=32, suffix_len=32).exact
    sampled_extraction(target, members, n_samples=10).extracted
    probabilistic_extraction(target, members).by_queries[100]
    canary_exposure(target, make_canaries(20, seed=7, include_prob=0.5)).epsilon_one_run
    pii_leakage(target, items=[{"category": "email", "value": "..."}], prompts=[...]).by_category
    pii_inference(target, [{"category": "iban", "value": "...", "prompt": "...", "candidates": [...]}]).inferred
    blind_baseline(members, nonmembers).warning
    metrics.tpr_at_fpr(member_scores, nonmember_scores, fpr=0.01)

Every function that takes many texts, prompts or canaries skips the unusable ones (an empty or one-token
text, a document shorter than the attack's window, a prompt with no room in the context, a malformed
canary), counts them in its result (`n_skipped`, and `skipped`: reason -> count, also in `as_dict()`), and
raises `NothingUsable` only when nothing usable is left.

Attack IDs (stable; reports and policies refer to them): FA-MIA-LOSS, FA-MIA-ZLIB, FA-MIA-MINK,
FA-MIA-MINKPP, FA-MIA-REF, FA-MIA-RMIA, FA-MIA-LIRA (membership, higher score = member);
FA-EXT-DISC, FA-EXT-SAMPLED, FA-EXT-PROB, FA-EXT-CANARY, FA-EXT-PII, FA-EXT-PII-INF (extraction); FA-HYG-BLIND
(hygiene check). `list_attacks()` lists them with citations; `register_attack` adds one.
"""

from . import metrics
from .errors import AttackError, InputError, IntegrityError, MissingAttackInput, NothingUsable
from .extraction import (
                         BENCHMARK_50_50,
                         DEFAULT_TEMPLATE,
                         GREEDY,
                         PAPER_SAMPLING,
                         PYTHIA_32_32,
                         Canary,
                         Generations,
                         InferenceTrial,
                         PersonalItem,
                         SamplingConfig,
                         canary_exposure,
                         discoverable_extraction,
                         generate,
                         make_canaries,
                         pii_inference,
                         pii_leakage,
                         probabilistic_extraction,
                         sampled_extraction,
)
from .hygiene import BlindBaselineResult, blind_baseline
from .membership import MembershipContext, MembershipReport, MembershipResult, run_membership
from .model import CausalLM, load_causal_lm
from .registry import AttackSpec, get_attack, list_attacks, register_attack
from .scoring import ScoreCache, score_texts, shared_prefix_logliks
from .sharding import Shard

__all__ = [
    # models and the scoring pass
    "CausalLM", "load_causal_lm", "ScoreCache", "score_texts", "shared_prefix_logliks", "Shard",
    # membership inference
    "run_membership", "MembershipReport", "MembershipResult", "MembershipContext",
    # extraction
    "discoverable_extraction", "sampled_extraction", "probabilistic_extraction", "canary_exposure",
    "make_canaries", "Canary", "pii_leakage", "PersonalItem", "pii_inference", "InferenceTrial",
    "generate", "Generations", "SamplingConfig", "GREEDY",
    "PAPER_SAMPLING", "BENCHMARK_50_50", "PYTHIA_32_32", "DEFAULT_TEMPLATE",
    # hygiene and metrics
    "blind_baseline", "BlindBaselineResult", "metrics",
    # registry and errors
    "AttackSpec", "register_attack", "get_attack", "list_attacks", "AttackError", "InputError", "IntegrityError",
    "MissingAttackInput", "NothingUsable",
]
