"""``python -m tack_control token --lxm NSID``: print a service-auth token for calling this spindle (sandbox and tests).

The token is signed with a sandbox key (``--key``, a PEM file; created as
secp256k1 when missing) for ``--iss`` (default TACK_OWNER_DID) and the
spindle's did:web (default from TACK_HOSTNAME). It verifies only where the
issuer's DID document publishes that key: stderr shows the key's Multikey, and
``--multikey`` prints just that (for a DID document; the sandbox publishes it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec

from tack_control.identity.did import BadDid, check_did, web_did
from tack_control.identity.keys import BadKey, from_crypto
from tack_control.identity.signing import load_or_create_key, sign_service_token


def main(argv: list[str], environ: Mapping[str, str] = os.environ) -> int:
    """Print the token on stdout; 2 on bad arguments."""
    data_dir = environ.get("TACK_DATA_DIR", "").strip() or ".data"
    parser = argparse.ArgumentParser(prog="python -m tack_control token", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lxm", default="", help="the XRPC method the token is for (NSID); required for a token"
    )
    parser.add_argument("--iss", default=environ.get("TACK_OWNER_DID", ""), help="the caller's DID")
    parser.add_argument("--aud", default="", help="the spindle's DID (default: did:web of TACK_HOSTNAME)")
    parser.add_argument(
        "--key", default=os.path.join(data_dir, "sandbox", "service-auth-key.pem"), help="PEM private key"
    )
    parser.add_argument("--lifetime", type=int, default=60, help="seconds the token is valid (default 60)")
    parser.add_argument(
        "--multikey",
        action="store_true",
        help="print the key's #atproto Multikey (creating the key when missing) instead of a token",
    )
    args = parser.parse_args(argv)
    if args.multikey:
        key = _key(args.key)
        if key is None:
            return 2
        print(from_crypto(key.public_key()).multikey())
        return 0
    if not args.lxm:
        parser.error("--lxm is required for a token")
    hostname = environ.get("TACK_HOSTNAME", "").strip()
    aud = args.aud or (web_did(hostname) if hostname else "")
    if not aud:
        parser.error("give --aud or set TACK_HOSTNAME")
    try:
        check_did(args.iss)
    except BadDid as exc:
        parser.error(f"--iss (or TACK_OWNER_DID) {args.iss!r}: {exc}")
    key = _key(args.key)
    if key is None:
        return 2
    print(sign_service_token(key, iss=args.iss, aud=aud, lxm=args.lxm, lifetime_s=args.lifetime))
    print(
        f"signed for {args.iss} → {aud}, lxm {args.lxm}, with {args.key} (#atproto Multikey {from_crypto(key.public_key()).multikey()})",
        file=sys.stderr,
    )
    return 0


def _key(path: str) -> ec.EllipticCurvePrivateKey | None:
    """The key at ``path`` (created when missing); None, said on stderr, when it cannot be used."""
    try:
        return load_or_create_key(path)
    except (OSError, ValueError, BadKey) as exc:
        print(f"cannot use key {path}: {exc}", file=sys.stderr)
        return None
