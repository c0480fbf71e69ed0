"""The method (FlexOlmo, Shi et al. 2025): anchored mixture-of-experts training, packages, merging, opt-out.

    model.py          the whole anchored-MoE model in one file (FlexOlmo layers, router rows, ModelConfig)
    anchor.py         the frozen public anchor: trained from scratch or imported, verified by root digest
    expert.py         the 2-expert training model built from the anchor, the package an owner shares, compose
    training.py       the training loop (packed streams, router negatives, exact resume)
    router_init.py    domain-informed router rows; router_tuning.py: the optional joint tuning after merging
    merge.py          merging packages into one Hugging Face FlexOlmo checkpoint, and opting experts out
    checkpoint.py     reading and writing Hugging Face checkpoints (safetensors only, never pickle)
    tokenizer.py      the byte-level BPE tokenizer trained locally
    evaluate.py       held-out perplexity; generation.py: text from a merged pool or anchor + expert

The owner's training run, accounted in the privacy ledger, is flexaudit.privacy.expert_training.train_expert.
"""
