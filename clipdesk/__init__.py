"""clipdesk: explore your own photo collection by meaning.

The core (everything outside ``clipdesk.gui``) never imports Qt. Heavy libraries
(torch, open_clip, hnswlib) are imported lazily inside the functions that need them,
so ``clipdesk --help`` and the CLI's plain commands start fast.
"""

__version__ = "0.1.0"
