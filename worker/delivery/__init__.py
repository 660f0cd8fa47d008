"""Delivery: what became of each sent message at the phone, and the app told when it is final.

- :mod:`~worker.delivery.config` — the delivery settings (push checks, polling, horizon, webhooks);
- :mod:`~worker.delivery.states` — status and error codes as delivery states, funnel and words;
- :mod:`~worker.delivery.matching` — a status's request id and phone to its batch and report row;
- :mod:`~worker.delivery.poller` — status.php in mass requests within every limit, on a schedule that
  backs off as messages age; the campaign's ``delivered_final``;
- :mod:`~worker.delivery.receiver` — the push endpoint (an ASGI app, ``smsc-mailer status-receiver``);
- :mod:`~worker.delivery.webhooks` — signed JSON events to the app, retried for hours;
- :mod:`~worker.delivery.report` — the ``delivery`` of ``status --json`` and the report's columns;
- :mod:`~worker.delivery.bench` — push ingestion and polling figures.

The Redis side is :mod:`scheduler.delivery`.
"""
