"""Optional TLS between the control plane and its providers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tack_common import client
from tack_common.pb import provider_pb2 as pb
from tests.fakes.appview import AppviewClient
from tests.support.codefacts import ROOT
from tests.support.stack import OWNER, QUICK, Stack, registered, stub_workflow


pytestmark = pytest.mark.e2e


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_providers_and_the_control_plane_speak_tls_when_configured(tmp_path: Path) -> None:
    """With a certificate the provider refuses plaintext; the control plane trusting its CA runs pipelines."""
    cert, key = make_cert(tmp_path)
    ca = cert.read_bytes()
    stack = Stack(
        tmp_path,
        stub_env={"TACK_STUB_TLS_CERT_FILE": str(cert), "TACK_STUB_TLS_KEY_FILE": str(key)},
        control_env={"TACK_PROVIDER_TLS_CA_FILE": str(cert)},
        tls_ca=ca,
    )
    await stack.start()
    try:
        async with client.channel(stack.stub.address) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await client.provider_stub(plain).Describe(pb.DescribeRequest(), timeout=3)
        async with client.channel(stack.stub.address, ca) as secure:
            assert (
                await client.provider_stub(secure).Describe(pb.DescribeRequest(), timeout=5)
            ).name == "stub"
        probe = [sys.executable, "-m", "tack_provider_kit.healthcheck", stack.stub.address]
        with_ca = await asyncio.to_thread(subprocess.run, [*probe, str(cert)], cwd=ROOT, check=False)
        without = await asyncio.to_thread(subprocess.run, probe, cwd=ROOT, check=False, capture_output=True)
        assert (with_ca.returncode, without.returncode) == (0, 1)
        await registered(stack, OWNER)
        appview = AppviewClient(stack.cp.http)
        await appview.connect_events()
        rkey = stack.push(OWNER, "hello", [stub_workflow("tls.yml", QUICK)])
        knot = stack.knot.hostname
        await appview.wait_for(
            lambda: (appview.latest(knot, rkey, "tls.yml") or {}).get("status") == "success", timeout=30
        )
        log = await appview.read_logs(knot, rkey, "tls.yml")
        assert log.close_code == 1000
        assert log.lines
        await appview.close()
    finally:
        await stack.stop()


def test_a_certificate_without_its_key_is_a_configuration_error(tmp_path: Path) -> None:
    """Setting only one of the TLS files stops the provider with a message naming both variables."""
    cert, _ = make_cert(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tack_provider_stub"],
        env={"PATH": "/usr/bin:/bin", "TACK_STUB_TLS_CERT_FILE": str(cert)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "TACK_STUB_TLS_CERT_FILE and TACK_STUB_TLS_KEY_FILE must be set together" in result.stderr
