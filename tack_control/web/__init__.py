"""The web face: the aiohttp application, the streams and XRPC methods Tangled reads, webhooks."""
