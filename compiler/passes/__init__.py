"""Graph rewrites: one module per family."""
