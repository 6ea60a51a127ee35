"""A user's presence from their devices' client states, as an RFC 3863 PIDF document.

* ``available``: some device is in the foreground (a live flow): basic ``open``;
* ``away``: every device with a binding is suspended — asleep, but a call wakes it
  with a push: basic ``open`` (the user can be reached) with the RPID activity
  ``<rpid:away/>`` (RFC 4480 §3.2) and a note, as Linphone and Jitsi show "away";
* ``offline``: no device can be reached: basic ``closed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal
from xml.sax.saxutils import quoteattr

from sipwake.registrar.state import ClientState

__all__ = ["PIDF_TYPE", "Presence", "pidf_document", "presence_of"]

Presence = Literal["available", "away", "offline"]

PIDF_TYPE = "application/pidf+xml"

_NOTES = {
    "available": "Available",
    "away": "Away (asleep; a call wakes it with a push)",
    "offline": "Offline",
}


def presence_of(states: Iterable[ClientState]) -> Presence:
    """The user's presence from the client states of their bindings."""
    seen = set(states)
    if "foreground" in seen:
        return "available"
    if "suspended" in seen:
        return "away"
    return "offline"


def pidf_document(entity: str, presence: Presence) -> bytes:
    """The PIDF (RFC 3863) body of a NOTIFY for ``entity`` (the user's AOR)."""
    basic = "closed" if presence == "offline" else "open"
    note = _NOTES[presence]
    activity = "<rpid:away/>" if presence == "away" else "<rpid:unknown/>"
    person = (
        f'  <dm:person id="p1">\n'
        f"    <rpid:activities>{activity}</rpid:activities>\n"
        f"    <dm:note>{note}</dm:note>\n"
        f"  </dm:person>\n"
        if presence != "offline"
        else ""
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        ' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"'
        f" entity={quoteattr(entity)}>\n"
        '  <tuple id="sipwake">\n'
        f"    <status><basic>{basic}</basic></status>\n"
        f"    <note>{note}</note>\n"
        "  </tuple>\n"
        f"{person}"
        "</presence>\n"
    )
    return text.encode()
