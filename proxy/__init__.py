"""heed: an asynchronous SMTP policy proxy that takes "no" for an answer."""

__version__ = "0.1.0"
