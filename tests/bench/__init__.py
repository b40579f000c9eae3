"""tack's benchmark suite (``make bench`` = ``python -m tests.bench``).

Runs the real processes on loopback (control plane, stub provider, simulated
knot and Jetstream) with load clients and limit servers in separate processes,
and reports each figure as tack's median over the runs, the limit's median
(the same work with tack's logic taken out) and their ratio. Results go to
``bench-results/latest.json`` plus a timestamped copy (``--out`` to change);
``--quick`` is the seconds-long smoke version that ``make test`` runs.
"""
