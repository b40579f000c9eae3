"""Who is calling: DID resolution, atproto keys, service-auth tokens, and bounded fetches from the internet."""
