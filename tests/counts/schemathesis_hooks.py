"""Schemathesis hooks for tests/counts/test_api_contract.py (loaded with SCHEMATHESIS_HOOKS).

Hypothesis draws small values and draws them again, so generated Idempotency-Keys repeat
across requests: a repeat of a creation is then, rightly, a replay of the first answer,
whose count a later generated DELETE may have removed, and the stateful check "a created
resource can be read" fails on behaviour the contract asks for. Each generated key is made
unique; tests/counts/test_idempotency.py covers replays and malformed keys.
"""

import uuid

import schemathesis

KEY = "Idempotency-Key"


@schemathesis.hook
def map_headers(context, headers):
    if headers and KEY in headers:
        headers[KEY] = str(uuid.uuid4())
    return headers
