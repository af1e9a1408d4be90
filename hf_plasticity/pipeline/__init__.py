"""The restore pipeline: one transaction that every entry point calls, and the report it returns."""
