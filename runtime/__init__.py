"""kiln.runtime: sessions, artifacts and the benchmark engine."""
