"""Runtime do-not-disturb: set by the phone with a feature code, or by the admin.

Theory of operation
-------------------
A user's DND starts as their configuration's (``users.<name>.dnd``, the plan's
``dnd``). While the server runs it can be changed:

* by the phone, with a feature code as PBXs do (FreePBX/Asterisk ``*78`` on and
  ``*79`` off; Yealink, Akuvox and Snom phones send their "DND On/Off Code" as a call
  to the PBX): an INVITE whose Request-URI is ``sip:*78@<our domain>`` or
  ``sip:*79@…`` from an authenticated local user sets *that user's* DND (the From
  user, which the digest check has tied to the credentials). FreePBX answers such a
  call and plays "do not disturb activated"; sipwake has no media, so it answers at
  once with a final ``603`` whose reason phrase says what happened (``DND On`` /
  ``DND Off``), with a ``Warning: 399`` in words: a 6xx ends the attempt with no
  retry elsewhere, no dialog is set up, and softphones show the phrase ("Call
  declined: DND On"). ``*78`` twice is still on (not a toggle, unlike ``*76``).
* by the admin: ``sipwake dnd USER on|off`` (``POST /dnd/USER/on`` on the admin
  endpoint).

What DND does is the plan's ``dnd`` (``sipwake.proxy.wake``): no push, no ringing,
straight to the no-answer target. ``DndState`` keeps the runtime overrides in memory:
a restart of the server returns every user to the configuration's DND.
"""

from __future__ import annotations

import dataclasses

from sipwake.proxy.plan import CallPlan

__all__ = ["DND_OFF", "DND_ON", "DndState", "feature_code", "feature_reply"]

DND_ON = "*78"
"""The feature code that turns DND on (FreePBX, Asterisk, 3CX's default set)."""
DND_OFF = "*79"
"""The feature code that turns DND off."""

_CODES = {DND_ON: True, DND_OFF: False}


def feature_code(user: str | None) -> bool | None:
    """The DND state a Request-URI user part asks for (``*78`` → True, ``*79`` → False),
    None for any other user part."""
    if user is None:
        return None
    return _CODES.get(user)


def feature_reply(on: bool) -> tuple[int, str, str]:
    """The answer to a feature-code INVITE: status, reason phrase, ``Warning`` value."""
    state = "on" if on else "off"
    return 603, f"DND {state.capitalize()}", f'399 - "do not disturb is now {state}"'


class DndState:
    """User name → DND set while running (absent: the configuration's)."""

    def __init__(self) -> None:
        self._set: dict[str, bool] = {}

    def set(self, user: str, on: bool) -> bool:
        """Set ``user``'s DND; returns whether it was set differently before (or not at
        all at runtime)."""
        before = self._set.get(user)
        self._set[user] = on
        return before != on

    def get(self, user: str) -> bool | None:
        return self._set.get(user)

    def apply(self, user: str, plan: CallPlan) -> CallPlan:
        """``plan`` with ``user``'s runtime DND, if one was set."""
        on = self._set.get(user)
        if on is None or on == plan.dnd:
            return plan
        return dataclasses.replace(plan, dnd=on)
