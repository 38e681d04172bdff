"""The command-line layer: one module per command, each parsing its arguments and calling the library.

The top-level scripts (train_model.py, ...) and the console entry points both call these `main` functions.
"""
