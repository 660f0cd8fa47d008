"""``make bench``: the benchmark (:mod:`~worker.dev.bench.run`), its load generator and phone files
(:mod:`~worker.dev.bench.load`), the report (:mod:`~worker.dev.bench.report`), the profiler
(:mod:`~worker.dev.bench.profile`) and the one-task-per-recipient baseline app
(:mod:`~worker.dev.bench.baseline_app`)."""
