"""Commands: the only layer that knows Kafka and PostgreSQL together (loop, run, shadow, drain,
status, verify). Each module is one command or one part of the loop."""
