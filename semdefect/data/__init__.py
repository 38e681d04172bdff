"""Datasets: split folders and class folders, loading through the one preprocessing path, leak-free splits and
the near-duplicate search behind them."""
