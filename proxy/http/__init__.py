"""The HTTP side: one-click unsubscribe (RFC 8058), its pages, health and metrics."""
