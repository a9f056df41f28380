"""Near-duplicates and exact copies: groups from the stored vectors, which to keep, the trash."""
