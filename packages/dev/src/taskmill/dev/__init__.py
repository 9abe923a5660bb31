"""taskmill-dev: the whole cluster on one machine."""
