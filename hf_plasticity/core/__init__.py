"""Core: the plan type and its transaction, the restore record, architecture rules, targeting, units, fresh values,
calibration data, scores, optimizer-state helpers, collectives and validators. Imports nothing above it."""
