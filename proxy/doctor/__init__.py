"""`heed doctor`: is the whole path the mailbox providers check in place? DNS, HTTPS, routing."""
