"""SVTR benchmark toolkit: export, TVM engine build, LMDB evaluation and timing.

Split by pipeline stage; imports only go one way (``tests/test_layout.py`` checks it):

- base (modules directly here): errors, files, paths, threads, memory, cli, table, progress,
  config, preprocess, presets, provenance, cpu_features, engine_file, numerics, rpc (the client);
- ``prepare`` (model -> ONNX) and ``compile`` (ONNX -> engine) import only the base;
- ``runtime`` (run an engine) imports only the base; ``evaluate`` imports runtime;
- ``bench`` may import all of them.
"""

__version__ = "0.9.0"  # CHANGELOG.md; part of every engine's build recipe (compile.build.recipe_digest)
