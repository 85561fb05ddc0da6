"""What the transport reads in a kombu message envelope before anything else does.

A queue can hold elements that are not valid messages (pushed by hand or by another tool, or
damaged): ``check`` finds them, so the transport records and removes them before kombu or Celery
could fail on them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from benchcelery.bench.keys import UNKNOWN_SITE

# What loading and checking an envelope raises for an element that is not a valid message.
INVALID = (ValueError, TypeError, KeyError, binascii.Error)


def site(message: Any) -> str:
    """The site a message's headers name, UNKNOWN_SITE when they name none."""
    try:
        return str(message["headers"].get("site") or UNKNOWN_SITE)
    except (KeyError, TypeError, AttributeError):
        return UNKNOWN_SITE


def check(message: Any) -> None:
    """Raise ValueError/KeyError/binascii.Error unless ``message`` is a kombu envelope kombu and
    Celery can take apart without failing."""
    if not isinstance(message, dict):
        raise ValueError(f"a message is a JSON object, not {type(message).__name__}")
    properties, headers, body = message["properties"], message.get("headers"), message.get("body", "")
    if not isinstance(properties, dict) or not isinstance(headers, dict | None):
        raise ValueError("'properties' and 'headers' must be objects")
    if not isinstance(properties.get("delivery_info", {}), dict) or not isinstance(body, str):
        raise ValueError("'delivery_info' must be an object and 'body' a string")
    if properties.get("body_encoding") == "base64":
        base64.b64decode(body, validate=True)
