"""The SMSC HTTP API client (no Celery, no Redis). The simulator is :mod:`worker.sim`.

- :mod:`~worker.smsc.client`    ``SmscClient``: send, cost, status, balance over one keep-alive pool
- :mod:`~worker.smsc.deadline`  the transport that makes ``timeout_s`` a hard wall-clock deadline
- :mod:`~worker.smsc.errors`    one error class per meaning for the batch, classified once
- :mod:`~worker.smsc.requests`  the form fields of every request (how a text travels unchanged)
- :mod:`~worker.smsc.responses` the answers of every endpoint, read into :mod:`~worker.smsc.reports`
- :mod:`~worker.smsc.statuses`  status and delivery-error codes: taken, sent or failed, in words
- :mod:`~worker.smsc.phones`    how the provider spells (auto-corrects) a number, and matching its echoes
- :mod:`~worker.smsc.encoding`  GSM 03.38 / UCS-2 parts, the 1000-character and sender limits
"""
