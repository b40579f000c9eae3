"""tack's local sandbox: loopback simulations of the outside systems a spindle talks to.

``SimulatedJetstream`` and ``SimulatedKnot`` stand in for Bluesky Jetstream and a
Tangled knot so that ``make run`` and the tests can drive tack without network access.
"""
