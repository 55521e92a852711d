"""What the mailbox providers require of bulk mail: DKIM, Feedback-ID, a body unsubscribe link."""
