"""The chaos harness: the whole stack under random crashes, drops, stalls and webhook faults."""
