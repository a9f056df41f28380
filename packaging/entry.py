"""The frozen app's entry point (PyInstaller runs this file as __main__, after the runtime
hooks: cpu_check.py has checked the CPU and chosen the native builds by then)."""

import multiprocessing
import sys

from clipdesk.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
