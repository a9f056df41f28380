"""Finding the nearest vectors: the hnswlib graph (a cache of the vectors in SQLite) and its
compact int8 copy."""
