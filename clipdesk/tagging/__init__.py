"""The user's labels and the tags they give photos (zero-shot, from the stored vectors)."""
