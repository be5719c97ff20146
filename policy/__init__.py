"""Pure policy: decisions as functions of their inputs (no I/O). Imports schemas only."""
