"""``python -m tack_sandbox``: what ``make run`` starts; ``python -m tack_sandbox trigger``: ``make trigger``."""

from __future__ import annotations

import sys

from tack_sandbox.launcher import main


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
