"""Stateful forking proxy (RFC 3261 §16), the call-wake engine and PBX call plans."""
