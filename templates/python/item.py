"""The parts of `get-item` that need no host: plain Python, tested by
`python3 -m unittest`."""

import json
from urllib.parse import quote


class InvalidInput(ValueError):
    pass


def item_id(text):
    """The item's id from the input document (the host has checked it against the input
    schema)."""
    try:
        document = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"input is not JSON: {e}")
    item = document.get("id") if isinstance(document, dict) else None
    if not isinstance(item, str) or item == "":
        raise InvalidInput("`id` must be a non-empty string")
    return item


def item_url(base, item):
    """`{base}/items/{id}`, the id percent-encoded."""
    return f"{base.rstrip('/')}/items/{quote(item, safe='')}"
