"""The built-in voicemail: where unanswered calls are diverted (RFC 4458 URIs).

``core.py`` is the sans-IO user agent server (SIP via ``TransactionLayer``,
SDP offer/answer, recording); ``g711.py``, ``sdp.py``, ``rtp.py``,
``mailbox.py`` and ``dialog.py`` are its pure parts; ``store.py`` writes and lists messages
(WAV + JSON sidecar); ``server.py`` is the asyncio shell, ``VoicemailServer``.
"""

from __future__ import annotations

from sipwake.voicemail.core import CallState, VoicemailCore
from sipwake.voicemail.events import VoicemailMessage, VoicemailOutput
from sipwake.voicemail.server import DEFAULT_DIRECTORY, DEFAULT_PORT, VoicemailServer
from sipwake.voicemail.store import SavedMessage, list_messages, save_message

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_PORT",
    "CallState",
    "SavedMessage",
    "VoicemailCore",
    "VoicemailMessage",
    "VoicemailOutput",
    "VoicemailServer",
    "list_messages",
    "save_message",
]
