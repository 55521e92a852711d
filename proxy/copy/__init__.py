"""Changes heed makes to the body of a per-recipient copy: tracked links, the re-permission ask."""
