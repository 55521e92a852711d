"""What heed sends back to the tool: sync-back requests, signed webhooks, suppression files."""
