"""Runtimes that run a model's image tower (torch, OpenVINO), the ONNX writer, the towers that
compute only the pooled output, and the one choice among them. Imports nothing from
``clipdesk.models``: it knows a model only by its ``clipdesk.spec.ModelSpec``."""
