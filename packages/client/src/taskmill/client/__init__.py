"""taskmill client."""
