"""The SMTP edge: the only part of heed that speaks in reply strings."""
