"""One module per contender; each is run as `python -m bench.contenders.<module>`.

Modules are named `<name>_bench` so that none of them shadows the library it measures.
"""
