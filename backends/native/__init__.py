"""kiln's own C++ engine: the Python adapter around the compiled ``_native`` module."""
