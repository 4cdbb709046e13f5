"""What the tests and the benchmarks both need, and nothing of either: the environment of a
worker on a shared broker, publishing inputs as the engine's producers must
(:mod:`harness.broker`), an OTLP/HTTP sink to receive what an exporter sends
(:mod:`harness.otlp`), and hand-made records of the service-state contract for the board
(:mod:`harness.state`).

Not part of the installed package: ``tests/`` and ``bench/`` import it from the repository's
root, and the product (``workflows``, ``streams``) never does (import-linter).
"""
