"""The built-in mobile: the far end of the twin branch in a lab without a GSM gateway.

``core.py`` is the sans-IO user agent server (rings, answers after a set time or
when told, hangs up); ``server.py`` is its asyncio shell, ``MobileServer``.
"""

from __future__ import annotations

from sipwake.mobile.core import MobileCall, MobileCore, MobileState
from sipwake.mobile.server import MobileServer

__all__ = ["MobileCall", "MobileCore", "MobileServer", "MobileState"]
