"""Spark fixtures for any test module: a local session, a 2-worker standalone cluster on
127.0.0.1, and a session connected to that cluster.

A process holds one SparkContext at a time, so both session fixtures go through one
process-wide `SparkInfra`: asking for a session with another master stops the running
one first (the driver JVM stays up, so the switch costs a few seconds, not a JVM start).
The cluster is started on first use, restarted if a test stopped it, and stopped with
the Spark session at the end of the test run. Import the fixtures where needed:

    from spark_fixtures import cluster_spark, local_spark, spark_infra, standalone_cluster
"""
from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest
from pyspark import SparkContext
from pyspark.sql import SparkSession

from sexstream.settings import Settings, load
from cluster import StandaloneCluster
from streaming.preflight import wait_for_executors
from streaming.session import build_session, stop_session

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable

LOCAL_MASTER = "local[2]"
CLUSTER_WORKERS = 2


class SparkInfra:
    """The test run's Spark: at most one session and one standalone cluster at a time."""

    def __init__(self) -> None:
        self._cluster: StandaloneCluster | None = None

    def settings(self, master: str) -> Settings:
        """The packaged settings with `master`."""
        return load(master=master)

    def session(self, master: str) -> SparkSession:
        """The running session if its master is `master`, else a new one for `master`."""
        active = SparkContext._active_spark_context
        if active is not None and active.master != master:
            self.stop_session()
        return build_session(self.settings(master), "sexstream-tests")

    def stop_session(self) -> None:
        """Stop the running SparkSession, if any."""
        spark = SparkSession.getActiveSession()
        if spark is not None:
            stop_session(spark)
        elif SparkContext._active_spark_context is not None:
            SparkContext._active_spark_context.stop()

    def cluster(self) -> StandaloneCluster:
        """The standalone cluster with all its workers ALIVE, started or restarted as needed."""
        if self._cluster is None:
            self._cluster = StandaloneCluster(workers=CLUSTER_WORKERS, cores_per_worker=1,
                                              worker_memory="1g")
        if not self._cluster.running:
            self._cluster.start()
        return self._cluster

    def close(self) -> None:
        """Stop the session, then the cluster."""
        self.stop_session()
        if self._cluster is not None:
            self._cluster.stop()


#: Process-wide, so that importing these fixtures in several places still makes one cluster.
INFRA = SparkInfra()


@pytest.fixture(scope="session")
def spark_infra() -> Iterator[SparkInfra]:
    """The process-wide SparkInfra, closed at the end of the test run."""
    yield INFRA
    INFRA.close()


@pytest.fixture
def local_spark(spark_infra: SparkInfra) -> SparkSession:
    """A local[2] session (the running one if it is local[2])."""
    return spark_infra.session(LOCAL_MASTER)


@pytest.fixture
def standalone_cluster(spark_infra: SparkInfra) -> StandaloneCluster:
    """A master and 2 workers (1 core, 1 GiB each) on 127.0.0.1."""
    return spark_infra.cluster()


@pytest.fixture
def cluster_spark(spark_infra: SparkInfra, standalone_cluster: StandaloneCluster) -> SparkSession:
    """A session on `standalone_cluster`, its executors registered on every worker."""
    spark = spark_infra.session(standalone_cluster.master_url)
    wait_for_executors(spark, len(standalone_cluster.alive_worker_ports()), timeout=120)
    return spark
