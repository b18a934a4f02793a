"""What tests and benchmarks build on, written once: spec directories, a local etcd, fake fleets.

Imported by tests/unit, tests/integration and bench/; never imports a test module.
"""
