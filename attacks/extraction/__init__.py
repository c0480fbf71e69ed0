"""Training-data extraction attacks (one file each) and the batched KV-cache decoder they share.

FA-EXT-DISC discoverable (greedy prefix -> suffix), FA-EXT-SAMPLED the FlexOlmo paper's sampled
attack, FA-EXT-PROB probabilistic (n, p)-extraction, FA-EXT-CANARY canary exposure, FA-EXT-PII
personal-data leakage, FA-EXT-PII-INF personal-data inference (which of several candidates). All return
plain result objects with `as_dict()`; raw text only with reveal=True.
Unusable documents, prompts and canaries are skipped and counted in the result (`n_skipped`, `skipped`).
"""

from .canaries import DEFAULT_TEMPLATE, Canary, CanaryExposureResult, canary_exposure, make_canaries, random_secrets
from .decoding import GREEDY, PAPER_SAMPLING, Generations, SamplingConfig, decoding_logprobs, generate
from .discoverable import BENCHMARK_50_50, PYTHIA_32_32, DiscoverableResult, discoverable_extraction
from .pii import PersonalItem, PiiLeakageResult, pii_leakage
from .pii_inference import InferenceTrial, PiiInferenceResult, pii_inference
from .probabilistic import (
                            ProbabilisticExtractionResult,
                            extraction_probability,
                            probabilistic_extraction,
                            suffix_logprobs,
)
from .sampled import PAPER_WINDOW_LEN, SampledExtractionResult, sampled_extraction

__all__ = [
    "BENCHMARK_50_50", "DEFAULT_TEMPLATE", "GREEDY", "PAPER_SAMPLING", "PAPER_WINDOW_LEN", "PYTHIA_32_32",
    "Canary", "CanaryExposureResult", "DiscoverableResult", "Generations", "InferenceTrial", "PersonalItem",
    "PiiInferenceResult", "PiiLeakageResult",
    "ProbabilisticExtractionResult", "SampledExtractionResult", "SamplingConfig", "canary_exposure",
    "decoding_logprobs", "discoverable_extraction", "extraction_probability", "generate", "make_canaries",
    "pii_inference", "pii_leakage", "probabilistic_extraction", "random_secrets", "sampled_extraction",
    "suffix_logprobs",
]
