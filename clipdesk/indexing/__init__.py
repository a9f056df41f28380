"""Turning new photos into vectors: decoding ahead (on the CPU or with nvJPEG), embedding in
batches, and watching folders for changes."""
