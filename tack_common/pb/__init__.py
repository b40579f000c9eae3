"""Code generated from proto/tack/provider/v1/provider.proto by `make proto`."""
