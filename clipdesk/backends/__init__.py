"""How a model's image tower runs, fastest and faithful. Imports nothing from
``clipdesk.models``: it knows a model only by its ``clipdesk.spec.ModelSpec``.

- ``hardware``: what the machine is (CPU name, AVX-512, native bf16, the signature a
  measured choice is remembered under).
- ``runtimes``: the backends that run the tower (torch, OpenVINO) and ``unit_rows``.
- ``measuring``: the speed and fidelity of each candidate, and the load it ran under.
- ``choice``: ``choose()``, which both encoders call, and the remembered choices.
- ``onnx_export``: the one place torch's ONNX exporter is called.
- ``towers``: open_clip's towers computing only the pooled output (imports torch).
"""
