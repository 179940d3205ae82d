"""The server ranks: one shard of the store (and of the inference engine) per rank."""


def main(argv: list[str] | None = None) -> None:
    """``mpistage-server``: imported lazily, so helper modules of this package (``wake``) can run
    without starting MPI on import."""
    from .app import main as app_main

    app_main(argv)


__all__ = ["main"]
