"""The pure core: plain data in, plain data out. No driver, no network, no files.

Decoding (`decode`, `values`, `avro`), the mapping (`mapping/`: spec -> check
-> compile -> immutable plan), intents and their resolution against stored
versions (`intents`, `resolve`, `ordering`), diffs, verification and the one
serializer. `tests/unit/test_layout.py` keeps it pure.
"""
