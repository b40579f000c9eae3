"""Each service-auth token is used once: its (issuer, jti) is consumed durably until the token expires.

Only tokens whose signature verified reach the store, so nobody can fill it
with forged nonces; it is still bounded, and refuses (fails closed) rather
than forget a live nonce when full. The table lives in the control plane's
database (migration ``V_SERVICE_AUTH_NONCES``), so a replay is refused after
a restart too.
"""

from __future__ import annotations

import sqlite3

from tack_common.sqlite import Transaction
from tack_control.identity.tokens import LEEWAY_S, AuthError


CAPACITY = 65_536


class ReplayStore:
    """Consumes nonces in the ``service_auth_nonces`` table."""

    def __init__(self, conn: sqlite3.Connection, capacity: int = CAPACITY) -> None:
        self.conn = conn
        self.capacity = capacity

    def consume(self, iss: str, jti: str, exp: int, now: float) -> None:
        """Record ``(iss, jti)`` as used until ``exp`` (plus leeway); AuthError if it was used, or the store is full."""
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM service_auth_nonces WHERE expires_s < ?", (int(now),))
            inserted = conn.execute(
                "INSERT INTO service_auth_nonces (iss, jti, expires_s) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (iss, jti, exp + LEEWAY_S),
            ).rowcount
            if inserted == 0:
                raise AuthError("replayed", "this token was already used; request a fresh one for each call")
            (live,) = conn.execute("SELECT COUNT(*) FROM service_auth_nonces").fetchone()
            if live > self.capacity:
                raise AuthError("replay_store_full", "too many live tokens to remember; retry in a minute")
