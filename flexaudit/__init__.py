"""flexaudit: train, merge and audit FlexOlmo-style anchored mixture-of-experts language models."""

__version__ = "0.1.0"
