"""taskmill common."""
