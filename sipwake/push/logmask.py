"""Keeping push secrets out of HTTP libraries' logs.

httpx logs request URLs at INFO and hpack logs header blocks at DEBUG: device tokens
in APNs paths, Web Push capability URLs, bearer tokens and JWTs would reach the logs.
Each provider registers a masking function once; a ``SecretMask`` filter per provider
rewrites the records of those library loggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from sipwake.sip.pushtarget import mask_token

__all__ = ["JWT_RE", "LIBRARY_LOGGERS", "SecretMask", "guard_library_loggers", "mask_jwts"]

#: Libraries that log request URLs (httpx, INFO) or header blocks (hpack, DEBUG).
LIBRARY_LOGGERS = ("httpx", "httpcore.http2", "httpcore.connection", "hpack.hpack", "hpack.table")
JWT_RE = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]+")


def mask_jwts(text: str) -> str:
    return JWT_RE.sub(lambda m: mask_token(m.group(0)), text)


class SecretMask(logging.Filter):
    """Rewrites a record's message through ``mask`` when that changes it."""

    def __init__(self, key: str, mask: Callable[[str], str]) -> None:
        super().__init__()
        self.key = key
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def guard_library_loggers(key: str, mask: Callable[[str], str]) -> None:
    """Attach the ``key`` mask once to each library logger that may see secrets."""
    for name in LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, SecretMask) and f.key == key for f in library_logger.filters):
            library_logger.addFilter(SecretMask(key, mask))
