"""Training and evaluation data: loaders, the member/holdout split and the built-in corpus."""

from flexaudit.data.documents import Document
from flexaudit.data.loading import load_documents

__all__ = ["Document", "load_documents"]
