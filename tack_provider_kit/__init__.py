"""What every tack provider shares: the generated contract and the provider runtime.

Providers implement :class:`tack_provider_kit.provider.Provider` and hand it to
:func:`tack_provider_kit.server.run`; the runtime supplies the gRPC server,
health, reflection, metrics, the durable status outbox and log framing.
"""
