"""The tools around the product: the process stack (:mod:`worker.dev.stack`), the demo, the benchmark
(:mod:`worker.dev.bench`) and the chaos suite, behind the ``smsc-mailer-dev`` command. Installed with the
``dev`` extra; the runtime never imports this package and the Docker image does not ship it."""
