"""Test support shipped with lsm3: local S3 servers (moto, SeaweedFS) and fault injection.

Tests, examples, benchmarks and users import it; the library itself never does (a test
checks that ``import lsm3`` loads nothing from here). It may import anything in ``lsm3``.
"""
