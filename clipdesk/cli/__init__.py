"""The command line: ``clipdesk`` (``main``), ``clipdesk models`` and the self-test."""
