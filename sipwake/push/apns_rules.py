"""What APNs checks in a push before it delivers it: pure rules shared by the mock APNs
(``sipwake.push.mock``) and the replay's push service (``sipwake.scenario.virtual``).

Apple refuses, with a 4xx and a JSON ``reason`` (PROTOCOLS.md §3.2, §3.5, §4):

* a device token that is not hex (``BadDeviceToken``), or that APNs never issued
  (``BadDeviceToken`` too: a token of the other environment reads the same);
* a token pushed on a topic it does not belong to (``DeviceTokenNotForTopic``): an iOS
  app has a PushKit VoIP token, valid only for ``<bundle>.voip``, and a separate
  remote-notification token for ``<bundle>`` (alert and background pushes);
* ``apns-push-type`` missing or unknown (``InvalidPushType``); ``voip`` on a topic without
  ``.voip``, or ``alert``/``background`` on one with it (``BadTopic``);
* ``apns-priority`` other than 10, 5 or 1, a ``background`` push not at 5, a ``voip``
  push at 1 (``BadPriority``);
* ``apns-expiration`` that is not UNIX seconds (``BadExpirationDate``), ``apns-id`` that
  is not a lower-case canonical UUID (``BadMessageId``), ``apns-collapse-id`` over 64
  bytes (``BadCollapseId``);
* an empty body (``PayloadEmpty``), one over 4096 bytes, 5120 for VoIP
  (413 ``PayloadTooLarge``), one that is not a JSON object (``BadPayload``, the mock's).

``TokenBook`` says which topic each token belongs to. A test or a simulated device
issues its tokens with their topics (``issue``); with ``learn`` (the lab's ``sipwake
mock-push``) the first push to a token the book does not know binds it to that push's
topic, so a lab works without telling the mock its phones' tokens, and a token used on
two topics is still refused the second time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from sipwake.push.payload import ALERT_PAYLOAD_LIMIT, VOIP_PAYLOAD_LIMIT

__all__ = ["PUSH_TYPES", "ApnsRefusal", "TokenBook", "check_apns_request"]

#: (HTTP status, APNs ``reason``).
ApnsRefusal = tuple[int, str]

#: ``apns-push-type`` values APNs knows (PROTOCOLS.md §3.2).
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "location",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)

_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2}){4,100}")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_COLLAPSE_LIMIT = 64


class TokenBook:
    """Device tokens and the one topic each belongs to (see the module text)."""

    def __init__(self, *, learn: bool = False) -> None:
        self.learn = learn
        """Bind an unknown token to the topic of its first push instead of refusing it."""
        self._topics: dict[str, str] = {}

    def issue(self, token: str, topic: str) -> None:
        """``token`` is a device token of ``topic`` (``<bundle>.voip`` for a PushKit VoIP
        token, ``<bundle>`` for a remote-notification token)."""
        self._topics[token.lower()] = topic

    def topic_of(self, token: str) -> str | None:
        return self._topics.get(token.lower())

    def __len__(self) -> int:
        return len(self._topics)

    def check(self, token: str, topic: str) -> ApnsRefusal | None:
        """None when a push on ``topic`` may go to ``token``, else APNs' refusal."""
        known = self._topics.get(token.lower())
        if known is None:
            if not self.learn:
                return 400, "BadDeviceToken"
            self._topics[token.lower()] = topic
            return None
        return None if known == topic else (400, "DeviceTokenNotForTopic")


def _priority_refusal(push_type: str, priority: str | None) -> ApnsRefusal | None:
    value = "10" if priority is None else priority.strip()
    if value not in ("10", "5", "1"):
        return 400, "BadPriority"
    if push_type == "background" and value != "5":
        return 400, "BadPriority"  # Apple: background pushes must use 5
    if push_type == "voip" and value == "1":
        return 400, "BadPriority"
    return None


def check_apns_request(
    token: str, headers: Mapping[str, str], body: bytes, *, book: TokenBook | None
) -> ApnsRefusal | None:
    """None when APNs would take this push (after authentication), else its refusal.

    ``headers`` are the request's, lower-case names, with ``apns-topic`` already defaulted
    (certificate auth); ``book`` None skips the token/topic check.
    """
    if not _HEX_RE.fullmatch(token):
        return 400, "BadDeviceToken"
    topic = headers.get("apns-topic", "")
    push_type = headers.get("apns-push-type")
    if not topic:
        return 400, "MissingTopic"
    if push_type is None or push_type not in PUSH_TYPES:
        return 400, "InvalidPushType"
    if push_type in ("voip", "alert", "background") and (push_type == "voip") != topic.endswith(
        ".voip"
    ):
        return 400, "BadTopic"
    refusal = _priority_refusal(push_type, headers.get("apns-priority"))
    if refusal is not None:
        return refusal
    expiration = headers.get("apns-expiration")
    if expiration is not None and not (expiration.isdigit() and len(expiration) <= 12):
        return 400, "BadExpirationDate"
    apns_id = headers.get("apns-id")
    if apns_id is not None and not _UUID_RE.fullmatch(apns_id):
        return 400, "BadMessageId"
    collapse = headers.get("apns-collapse-id")
    if collapse is not None and len(collapse.encode()) > _COLLAPSE_LIMIT:
        return 400, "BadCollapseId"
    if not body:
        return 400, "PayloadEmpty"
    if len(body) > (VOIP_PAYLOAD_LIMIT if push_type == "voip" else ALERT_PAYLOAD_LIMIT):
        return 413, "PayloadTooLarge"
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return 400, "BadPayload"
    if not isinstance(document, dict):
        return 400, "BadPayload"
    if book is not None:
        return book.check(token, topic)
    return None
