"""Messages on disk: one WAV file and one JSON sidecar per message, a directory per mailbox.

Layout::

    <directory>/<user>/<YYYYmmdd-HHMMSS>-<id>.wav    16-bit PCM, 8000 Hz, mono
    <directory>/<user>/<YYYYmmdd-HHMMSS>-<id>.json   the sidecar (times in UTC)

The WAV is written first and the sidecar last (to a temporary name, then
renamed), so a sidecar always describes a complete file. ``list_messages``
reads the sidecars; a sidecar that cannot be read is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sipwake.voicemail.events import VoicemailMessage
from sipwake.voicemail.mailbox import safe_user

__all__ = ["SAMPLE_RATE", "SavedMessage", "list_messages", "save_message"]

logger = logging.getLogger("sipwake.voicemail")

SAMPLE_RATE = 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedMessage:
    """A message as its sidecar describes it."""

    id: str
    user: str
    caller: str
    caller_name: str | None
    callee: str
    cause: int | None
    started: datetime
    duration: float
    codec: str
    packets: int
    ended_by: str
    call_id: str
    path: Path
    """The WAV file."""
    sidecar: Path

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user": self.user,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "callee": self.callee,
            "cause": self.cause,
            "started": self.started.isoformat(),
            "duration": self.duration,
            "codec": self.codec,
            "packets": self.packets,
            "ended_by": self.ended_by,
            "call_id": self.call_id,
            "file": str(self.path),
        }


def save_message(
    directory: str | os.PathLike[str], message: VoicemailMessage, pcm: bytes, wall: float
) -> SavedMessage:
    """Write ``pcm`` and the sidecar for ``message`` (which started at ``wall``, Unix time)."""
    started = datetime.fromtimestamp(wall, UTC)
    folder = Path(directory) / safe_user(message.user)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{started:%Y%m%d-%H%M%S}-{safe_user(message.id)}"
    wav_path = folder / f"{stem}.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)
    sidecar = {
        "id": message.id,
        "user": message.user,
        "caller": message.caller,
        "caller_name": message.caller_name,
        "callee": message.callee,
        "cause": message.cause,
        "started": started.isoformat(),
        "duration": round(message.duration_s, 3),
        "codec": message.codec,
        "packets": message.packets,
        "ended_by": message.ended_by,
        "call_id": message.call_id,
        "file": wav_path.name,
    }
    json_path = folder / f"{stem}.json"
    tmp = folder / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    return _load(json_path)


def _load(sidecar: Path) -> SavedMessage:
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    cause = data.get("cause")
    return SavedMessage(
        id=str(data["id"]),
        user=str(data.get("user") or sidecar.parent.name),
        caller=str(data["caller"]),
        caller_name=data.get("caller_name"),
        callee=str(data["callee"]),
        cause=int(cause) if cause is not None else None,
        started=datetime.fromisoformat(str(data["started"])),
        duration=float(data["duration"]),
        codec=str(data.get("codec", "-")),
        packets=int(data.get("packets", 0)),
        ended_by=str(data.get("ended_by", "-")),
        call_id=str(data.get("call_id", "")),
        path=sidecar.parent / str(data["file"]),
        sidecar=sidecar,
    )


def list_messages(directory: str | os.PathLike[str], user: str | None = None) -> list[SavedMessage]:
    """The messages under ``directory`` (only ``user``'s mailbox if given), newest first.

    ``user`` may be a mailbox name (``alice``) or an address (``sip:alice@lab.test``).
    A missing directory has no messages."""
    root = Path(directory)
    if user is not None:
        name = user.split(":", 1)[1] if user.startswith(("sip:", "sips:", "tel:")) else user
        folders = [root / safe_user(name.split("@", 1)[0])]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    messages = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for sidecar in sorted(folder.glob("*.json")):
            try:
                messages.append(_load(sidecar))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("skipping %s: %s", sidecar, exc)
    messages.sort(key=lambda m: (m.started, m.id), reverse=True)
    return messages
