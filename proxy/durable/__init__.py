"""What a reply promises is durable, on a Redis of its own away from the hot reads."""
