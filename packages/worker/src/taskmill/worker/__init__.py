"""taskmill worker."""
