"""The client side of the provider contract: channels and typed stubs."""

from __future__ import annotations

import grpc

from tack_common.pb import provider_pb2_grpc as pb_grpc


MAX_MESSAGE_BYTES = 8 << 20
# WatchStatus initial metadata: the id of the provider's status log that ``seq`` counts in.
OUTBOX_ID_HEADER = "tack-outbox-id"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Paired with the server's min_recv_ping_interval (10 s) so pings never earn a GOAWAY.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def channel(address: str, tls_ca: bytes | None = None) -> grpc.aio.Channel:
    """A channel to a provider sidecar with tack's keepalive and size settings; TLS when a CA is given."""
    if tls_ca is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca)
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def provider_stub(chan: grpc.aio.Channel) -> pb_grpc.ProviderAsyncStub:
    """The typed asyncio stub for the Provider service on ``chan``."""
    return pb_grpc.ProviderStub(chan)
