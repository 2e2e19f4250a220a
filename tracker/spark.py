"""``import tracker.spark; tracker.spark.register(spark)``: the ``tracker`` Spark data source.

A thin re-export of :mod:`tracker.warehouse.spark` under a short, stable name
(a contract); it needs the ``[spark]`` extra (pyspark, pyarrow).
"""

from tracker.warehouse.spark import FORMAT, TrackerDataSource, register, run_convert

__all__ = ["FORMAT", "TrackerDataSource", "register", "run_convert"]
