"""``shoal simulate``: replay a job trace through shoal's own policy on a virtual clock.

Modules: ``trace`` (SWF, CSV and JSON-lines readers), ``synthetic`` (a seeded trace
generator), ``cluster`` (the in-simulation batch scheduler), ``compare`` (``--compare``
variants), ``report`` (results, report files, terminal table), ``plots``, ``progress``,
``engine`` (the replay through the daemon's own controller on a virtual clock), ``args``
and ``command`` (the ``shoal simulate`` subcommand).
"""
