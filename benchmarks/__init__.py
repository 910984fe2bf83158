"""Reliability benchmarks of a real Axon server (docs/reliability-security.md): ``overload``
(an open loop at twice the measured capacity) and ``soak`` (a long mixed load with a reload in
the middle). They print numbers; they are not tests, though ``soak`` exits non-zero when its
criteria fail so that it can gate a release."""
