"""The Relax/TIR rewrites of the prepare pipeline and, after the records, the shift merge."""
