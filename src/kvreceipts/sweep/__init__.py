"""Policy by capacity sweeps: grids, exact and sampled miss-ratio curves, and their reports.

``grid`` splits a sweep into tasks, ``methods`` computes hits (replay, LRU stack distances,
SHARDS), ``executors`` runs tasks here, in processes or on Dask, ``report`` renders rows.
"""
