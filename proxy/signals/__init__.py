"""What heed hears: bounces, complaints, clicks, replies, events, webhooks, engagement."""
