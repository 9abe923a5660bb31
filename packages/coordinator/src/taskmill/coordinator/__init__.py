"""taskmill coordinator."""
