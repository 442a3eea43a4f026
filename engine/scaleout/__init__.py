"""Scale-out on Ray: `timelapse run --executor ray --workers N` (the `ray` extra).

The coordinator (`coordinator.py`, the driver process) keeps everything that decides what is committed: it plans
each epoch's slices and logs them, computes the watermarks, writes the sinks and dead letters, commits the state
tables and appends the manifest row, exactly as the single-process runner does (it is a `Runner`). The workers
(`worker.py`, Ray actors) do the work in between: each reads its share of every slice, runs the stateless part of
the plan over it, sends rows to the owners of their key groups, runs the stateful operators over the key groups
it owns, and hands its state changes to the coordinator at a checkpoint. `partitioning.py` holds the pure rules
(who owns which key group, the stages of a plan, row-watermark offsets). Nothing outside this package imports Ray.
"""
