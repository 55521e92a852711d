"""What heed hears: clicks, replies, bounces, complaints, webhooks and imported engagement."""
