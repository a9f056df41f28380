"""The frozen app's entry point (PyInstaller runs this file as __main__)."""

import multiprocessing
import sys

from clipdesk.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
