"""The server ranks: one shard of the store (and of the inference engine) per rank."""

from .app import main

__all__ = ["main"]
