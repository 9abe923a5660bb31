"""taskmill scheduler."""
