"""`sexstream replay`: the streaming job as a bounded run over backlog folders.

The same query as the daemon with an available-now trigger: it processes every FITS
file present at start, commits batch by batch (exactly once), and exits. Its checkpoint
is derived from the folders and the effective config, so re-running the same command
after a crash or Ctrl-C resumes instead of starting over. Exit status: 0 when every
image is ok, 1 when some image failed or is incomplete, 2 for a usage or configuration
error, 130 when interrupted (run the same command again to resume).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from sexstream.backlog import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Progress, Timing, checkpoint_for, fill,
                               process_started, summary)
from sexstream.flags import settings_from_args
from sexstream.rawfiles import expand_folders

log = logging.getLogger("sexstream")


def run_replay(args: argparse.Namespace) -> int:
    t0 = process_started()
    from streaming.daemon import GracefulStop, stop_between_batches
    from streaming.session import BackgroundSession, end_jvm, stop_session

    settings = settings_from_args(args, sink=args.sink, master=args.master,
                                  files_per_task=args.files_per_task)
    sink_real = os.path.realpath(settings.sink)
    folders = [f for f in expand_folders(args.folders)
               if f != sink_real and not f.startswith(sink_real + os.sep)]
    if not folders:
        raise FileNotFoundError("no backlog folder to replay (the sink itself is never replayed)")
    per_batch = args.max_files_per_batch or args.max_files_per_trigger or settings.max_files_per_trigger
    settings = settings.replace(max_files_per_trigger=max(1, per_batch))
    stop = GracefulStop().install()  # a SIGTERM during start-up stops cleanly too
    # the JVM boots while the driver imports the core, validates the selection, reads the sink
    session = BackgroundSession(settings, "sexstream-replay", ui=args.ui).start()
    try:
        from sexstream import extractor
        from sexstream.engine import Engine
        from sexstream.journal import Journal, journal_folder
        from sexstream.sink import Sink

        plan = extractor.prepare(settings)
        checkpoint = args.checkpoint or checkpoint_for(settings.sink, folders, plan.config_hash, args.force)
        sink = Sink(settings.sink)
        progress = Progress(total=0, every=args.progress_every)
        engine = Engine(sink, plan, hooks=[progress], files_per_task=settings.files_per_task).start()
        total, already = fill(Journal(journal_folder(checkpoint)), folders, sink.index, plan.config_hash,
                              force=args.force)
        progress.total = total
        log.info("replay of %d files in %d folder(s), %d already measured with config %s; checkpoint %s",
                 total, len(folders), already, plan.config_hash, checkpoint)
    except BaseException:
        session.abandon()
        raise
    spark = session.result()
    log.debug("Spark session ready after %.2f s (built in %.2f s)", time.monotonic() - t0, session.seconds)
    progress.start(already)
    timing = Timing(t0)
    try:
        query, adapter = start_replay_query(spark, settings, engine, checkpoint)
        log.debug("query started after %.2f s", time.monotonic() - t0)
        while query.isActive and not stop.event.wait(0.2):
            pass
        if stop.event.is_set():
            stop_between_batches(query, adapter)
            progress.close()
            print(f"replay interrupted ({stop.signal_name}); run the same command again to resume",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        exc = query.exception()
        if exc is not None:
            raise RuntimeError(f"the replay query failed: {exc}")
        for p in query.recentProgress:
            log.debug("batch %s Spark durations (ms): %s", p.batchId, p.durationMs)
    finally:
        progress.close()
        timing.work_done()
        stop_session(spark)
        end_jvm()
        timing.stopped()
    timing.first_batch, timing.first_image = adapter.first_batch_at, adapter.first_image_at
    if timing.first_batch is not None:
        log.debug("first batch after %.2f s, first image after %.2f s", timing.first_batch - timing.t0,
                  (timing.first_image or timing.first_batch) - timing.t0)
    totals = engine.totals
    statuses = {"ok": totals.ok, "failed": totals.failed, "incomplete": totals.incomplete}
    print(summary(progress, timing, statuses), flush=True)
    return EXIT_FAILED if totals.failed or totals.incomplete else EXIT_OK


def start_replay_query(spark, settings, engine, checkpoint):
    """The available-now query, with the executors' Python workers warming up (in the
    background) while it plans its first batch."""
    from streaming.query import start_query, warm_up_in_background

    warm_up_in_background(spark)
    return start_query(spark, settings, engine, checkpoint=checkpoint, available_now=True)


def cmd_replay(args: argparse.Namespace) -> int:
    from streaming.daemon import configure_logging

    configure_logging(args.verbose)
    return run_replay(args)
