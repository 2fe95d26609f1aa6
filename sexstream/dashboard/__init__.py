"""The live sky-coverage dashboard: a local web page pushed a refresh at each Delta commit.

`Dashboard(sink, host, port).start()` serves it from a background thread (as
`sexstream run --dashboard` does); `serve(sink, ...)` serves it in the foreground.
"""
from sexstream.dashboard.server import Dashboard, serve

__all__ = ["Dashboard", "serve"]
