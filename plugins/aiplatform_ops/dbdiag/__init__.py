"""dbdiag."""
