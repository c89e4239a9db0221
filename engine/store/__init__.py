"""The result store: hive-partitioned Parquet in a local directory, written atomically, read with DuckDB.

Layout under the root (partition values quoted with `paths.partition_value`, reversed by `unquote`):

    runs/run_id=<id>/part-<uuid>.parquet                        one file per `write_run` (status changes)
    metrics/run_id=<id>/method=<method key>/part-<group>.parquet one file per flush group (units of one method)
    timings/run_id=<id>/part-<group>.parquet                    the same group's timings ...
    maps/run_id=<id>/part-<group>.parquet                       ... and rows saying where each of its maps lies
    maps/run_id=<id>/model=<m>/method=<k>/video_id=<v>.npy      the float16 saliency maps themselves
    <table>/run_id=<id>/.../gen-<generation>-<n>.parquet        merged files of `aosa compact`
    generations/run_id=<id>.json                                which merged files a compacted run reads
    locks/run_id=<id>.lock                                      the process writing the run (lock.py)

Partition columns are ALSO stored inside every file (the directories only prune and help people browse);
readers turn hive partitioning off and union files by column name. One process at a time writes a run: a
`writer.RunWriter` holds the run's lock and writes its rows (checked first: rows.py) and maps, at once or
several units per file off the caller's thread (buffered.py); `maintenance` settles what a crash left and
`compaction` merges a run's files, both under the same lock. `reader.StoreReader` reads: which files it sees
is decided in one place, generations.visible_files (the compaction protocol); sql.py builds its views and
sandboxes user SQL.
"""
