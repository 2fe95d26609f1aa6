"""The chaos suite: a real `sexstream run` daemon under faults, and an audit of what it
committed against the ground truth.

Modules, one noun each:

- `feed`      the arrivals: generated exposures (and bad files) dropped into the raw
              folder by a writer thread; what was dropped is the ground truth
- `daemon`    one `sexstream run` process: start, SIGTERM, kill -9, its log, its RSS
- `faults`    the faults and how each is injected (kill -9 at random moments or at the
              crash hooks, SIGTERM, worker loss, checkpoint loss, a full disk)
- `audit`     the sink against the truth: lost, duplicated, wrong verdicts, rows that
              differ from a direct SExtractor run, Delta log vs files on disk
- `rounds`    the chaos loop (seeded rounds of faults) and its report table
- `overload`  a burst of thousands of tiny images: bounded batches, flat RSS, lag
- `diskfull`  the sink on a small tmpfs that fills up, then grows

`scripts/chaos.py` is the command-line face; `tests/test_chaos.py` runs bounded forms.
Nothing here is imported by the daemon itself.
"""
