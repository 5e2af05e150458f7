"""SVTR benchmark toolkit: export, TVM engine build, LMDB evaluation and timing."""
