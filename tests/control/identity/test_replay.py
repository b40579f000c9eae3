"""The nonce store: one use per (issuer, jti) until expiry, expired nonces dropped, and a full store fails closed."""

from __future__ import annotations

import sqlite3

import pytest

from tack_control.identity.replay import ReplayStore
from tack_control.identity.tokens import LEEWAY_S, AuthError


DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
OTHER = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


def rows(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM service_auth_nonces").fetchone()[0])


def test_a_nonce_is_kept_until_its_token_expires(conn: sqlite3.Connection) -> None:
    """Reuse before expiry (plus leeway) is refused; the same jti from another issuer is a different nonce; later it is forgotten."""
    store = ReplayStore(conn)
    store.consume(DID, "n1", exp=1000, now=900)
    store.consume(OTHER, "n1", exp=1000, now=900)
    with pytest.raises(AuthError, match="replayed"):
        store.consume(DID, "n1", exp=1000, now=1000 + LEEWAY_S)
    assert rows(conn) == 2
    store.consume(DID, "n2", exp=2000, now=1000 + LEEWAY_S + 1)
    assert rows(conn) == 1


def test_a_full_store_refuses_rather_than_forgets(conn: sqlite3.Connection) -> None:
    """At capacity a new nonce is refused (replay_store_full) and not stored; room comes back as nonces expire."""
    store = ReplayStore(conn, capacity=3)
    for i in range(3):
        store.consume(DID, f"n{i}", exp=1000 + i, now=900)
    with pytest.raises(AuthError, match="replay_store_full"):
        store.consume(DID, "n3", exp=1100, now=900)
    assert rows(conn) == 3
    store.consume(DID, "n3", exp=1100, now=1000 + LEEWAY_S + 1)
    assert rows(conn) == 3
