"""What every tack process shares: the generated provider contract, status names, time, SQLite, env parsing, logging, backoff, TIDs."""
