"""worker.smsc.protocol is only the old names, re-exported while callers move (delete with the module).

The wire format's own tests: test_smsc_requests.py (requests), test_smsc_responses.py (answers).
"""

from __future__ import annotations

from worker.smsc import phones, protocol, reports, requests, responses, statuses


def test_the_old_names_are_the_new_objects() -> None:
    homes = (requests, responses, reports, statuses, phones)
    assert sorted(protocol.__all__) == sorted(
        [
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
    )
    for name in protocol.__all__:
        (home,) = [m for m in homes if name in m.__all__]
        assert getattr(protocol, name) is getattr(home, name), name
