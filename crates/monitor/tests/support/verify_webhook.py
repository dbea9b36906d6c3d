"""Verifies a Rampart webhook signature, as a Python receiver would (the code in
docs/alerting.md, "Verifying the signature"). Used by tests/notify_http.rs.

Usage: verify_webhook.py SECRET SIGNATURE_HEADER < raw_body; exits 0 if valid, 1 if not.
"""

import hashlib
import hmac
import sys
import time


def verify_rampart_signature(secret: bytes, header: str, body: bytes, tolerance: int = 300) -> bool:
    """True if `header` (X-Rampart-Signature) signs the raw `body` with `secret`, and its
    timestamp is within `tolerance` seconds of now (refuses replays)."""
    timestamps, signatures = [], []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not signatures or not timestamps[0].isdigit():
        return False
    t = int(timestamps[0])
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


if __name__ == "__main__":
    ok = verify_rampart_signature(sys.argv[1].encode(), sys.argv[2], sys.stdin.buffer.read())
    sys.exit(0 if ok else 1)
