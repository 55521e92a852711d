"""What heed hears: bounces, complaints, events, webhooks, engagement and mail to heed itself."""
