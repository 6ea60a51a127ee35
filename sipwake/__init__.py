"""sipwake: a SIP registrar and stateful proxy for mobile softphones that sleep."""

__version__ = "0.1.0"
