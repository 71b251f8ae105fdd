"""kiln.compiler: frontend, targets, pass pipelines and partitioning. Imports no backend."""
