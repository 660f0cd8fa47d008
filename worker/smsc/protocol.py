"""Transitional: the old ``worker.smsc.protocol`` names, now in the modules that hold them.

``protocol.py`` held requests and answers together (540 lines); they live apart now:

- :mod:`worker.smsc.requests`  — ``send_params``, ``cost_params``, ``status_params``, ``encode_list``,
  ``fingerprint``, ``validate_request_id``, ``Line``, ``SECRET_PARAMS``
- :mod:`worker.smsc.responses` — ``parse_send``, ``parse_status``, ``parse_balance``
- :mod:`worker.smsc.reports`   — ``SendReport``, ``PhoneReport``, ``CostReport``, ``StatusReport``
- :mod:`worker.smsc.statuses`  — ``STATUS_NOT_FOUND`` and the status and delivery-error tables
- :mod:`worker.smsc.phones`    — ``mask_phone``, ``provider_spelling``, ``same_subscriber``, ``echo_index``

This module only re-exports the old names so that callers keep working while they move; import from
the modules above. It is deleted once nothing imports it.
"""

from __future__ import annotations

from worker.smsc.phones import mask_phone
from worker.smsc.reports import CostReport, PhoneReport, SendReport, StatusReport
from worker.smsc.requests import (
    SECRET_PARAMS,
    Line,
    cost_params,
    encode_list,
    fingerprint,
    send_params,
    validate_request_id,
)
from worker.smsc.responses import parse_balance, parse_send, parse_status
from worker.smsc.statuses import STATUS_NOT_FOUND

__all__ = [
    "SECRET_PARAMS",
    "STATUS_NOT_FOUND",
    "CostReport",
    "Line",
    "PhoneReport",
    "SendReport",
    "StatusReport",
    "cost_params",
    "encode_list",
    "fingerprint",
    "mask_phone",
    "parse_balance",
    "parse_send",
    "parse_status",
    "send_params",
    "validate_request_id",
]
