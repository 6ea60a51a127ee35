"""Push providers: wake a sleeping softphone (APNs now; FCM, Web Push and webhook to come).

``base`` holds the provider interface, ``payload`` the pure request builders and
response classifiers, ``apns`` the HTTP/2 client and ``mock`` a loopback APNs for tests.
"""

from __future__ import annotations

from sipwake.push.base import PushKind, PushOutcome, PushProvider, PushRequest, PushStatus

__all__ = ["PushKind", "PushOutcome", "PushProvider", "PushRequest", "PushStatus"]
