"""Mailbox providers: receiving domains grouped by who runs their mail; backing off when pushed."""
