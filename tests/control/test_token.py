"""``python -m tack_control token``: signs a token the spindle accepts, with a sandbox key it creates once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tack_control.__main__ import main
from tack_control.identity.replay import ReplayStore
from tack_control.identity.resolver import DidResolver
from tack_control.identity.serviceauth import ServiceAuth
from tack_control.identity.signing import load_or_create_key
from tack_control.netguard import Fetcher
from tests.fakes.atproto import FakePlc
from tests.support.atproto import Account, claims_of


LXM = "sh.tangled.repo.listSecrets"


def run(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``python -m tack_control`` with ``argv`` under ``env``; the exit status."""
    for name in ("TACK_DATA_DIR", "TACK_HOSTNAME", "TACK_OWNER_DID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    return int(caught.value.code or 0)


async def test_a_signed_token_verifies_against_the_published_key(
    plc: FakePlc,
    fetcher: Fetcher,
    conn: sqlite3.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The token is for TACK_OWNER_DID and the did:web of TACK_HOSTNAME; with the key's document on the PLC it is accepted."""
    owner = Account()
    env = {"TACK_DATA_DIR": str(tmp_path), "TACK_HOSTNAME": "127.0.0.1:8080", "TACK_OWNER_DID": owner.did}
    assert run(["token", "--lxm", LXM], env, monkeypatch) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    key_path = tmp_path / "sandbox" / "service-auth-key.pem"
    assert oct(os.stat(key_path).st_mode & 0o777) == "0o600"
    owner.key = load_or_create_key(str(key_path))
    assert owner.multikey() in err
    assert claims_of(token)["aud"] == "did:web:127.0.0.1%3A8080"
    assert claims_of(token)["exp"] - claims_of(token)["iat"] == 60
    plc.publish(owner)
    auth = ServiceAuth(DidResolver(fetcher, plc.url, dev=True), ReplayStore(conn), "127.0.0.1:8080")
    assert await auth.verify([f"Bearer {token}"], LXM) == owner.did
    assert run(["token", "--lxm", LXM], env, monkeypatch) == 0
    assert load_or_create_key(str(key_path)).private_numbers() == owner.key.private_numbers()


def test_missing_issuer_or_audience_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --iss/TACK_OWNER_DID or --aud/TACK_HOSTNAME, or with a bad key file, it exits 2 saying what is missing."""
    assert run(["token", "--lxm", LXM], {"TACK_HOSTNAME": "h.example"}, monkeypatch) == 2
    assert "--iss" in capsys.readouterr().err
    assert run(["token", "--lxm", LXM, "--iss", Account().did], {}, monkeypatch) == 2
    assert "--aud" in capsys.readouterr().err
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert (
        run(
            ["token", "--lxm", LXM, "--iss", Account().did, "--aud", "did:web:h.example", "--key", str(bad)],
            {},
            monkeypatch,
        )
        == 2
    )
    assert "cannot use key" in capsys.readouterr().err


def test_multikey_prints_the_public_key_a_did_document_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--multikey creates the key once and prints its Multikey (what the sandbox publishes); no --lxm needed, but a token needs one."""
    key_path = tmp_path / "owner.pem"
    assert run(["token", "--multikey", "--key", str(key_path)], {}, monkeypatch) == 0
    printed = capsys.readouterr().out.strip()
    owner = Account()
    owner.key = load_or_create_key(str(key_path))
    assert printed == owner.multikey()
    assert run(["token", "--multikey", "--key", str(key_path)], {}, monkeypatch) == 0
    assert capsys.readouterr().out.strip() == printed
    assert run(["token", "--iss", owner.did, "--aud", "did:web:h.example"], {}, monkeypatch) == 2
    assert "--lxm" in capsys.readouterr().err
