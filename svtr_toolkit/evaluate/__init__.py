"""Stage 4: accuracy and timing over LMDB data, parity, the dataset tool. Imports runtime and the base layer."""
