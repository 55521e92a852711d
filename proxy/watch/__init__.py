"""Watching heed's own process: how long its event loop is held, and by what."""
