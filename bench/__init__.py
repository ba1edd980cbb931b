"""Benchmark suite: lsm3 against a plain-pyarrow floor and peer table formats.

Every contender runs in its own process (and, for peers, its own virtualenv), so this
package must stay importable with nothing but the standard library: contender
scripts and the data generator import submodules from it under several pyarrow
versions. See bench/README.md.
"""
