"""SIP presence for local users (RFC 3856 over RFC 6665 SUBSCRIBE/NOTIFY).

``pidf.py`` turns a user's presence (available, away, offline: the client
states of their devices) into an RFC 3863 PIDF document; ``agent.py`` is the
sans-IO presence agent that keeps the subscriptions and sends the NOTIFYs.
"""

from __future__ import annotations

from sipwake.presence.agent import PresenceAgent
from sipwake.presence.pidf import PIDF_TYPE, Presence, pidf_document, presence_of

__all__ = ["PIDF_TYPE", "Presence", "PresenceAgent", "pidf_document", "presence_of"]
