"""JSON text as taskmill writes it: compact, with non-ASCII characters left as they are."""

from __future__ import annotations

import json

#: Encodes a JSON value as compact text. Built once: ``json.dumps`` with options builds a new
#: encoder on every call.
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
