"""The live sky-coverage dashboard: a local web page pushed a refresh at each Delta commit.

`Dashboard(sink, host, port).start()` serves it from a background thread (as
`sexstream run --dashboard` does); `serve(sink, ...)` serves it in the foreground.
"""
__all__ = ["Dashboard", "serve"]


def __getattr__(name: str):
    # imported on first use: `sexstream` commands that do not serve skip its imports
    if name in __all__:
        from sexstream.dashboard import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
