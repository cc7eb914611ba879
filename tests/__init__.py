"""The tests: torch parity, the book's numbers, analytic values; run with pytest from the repository root."""
