"""The synthetic SEM image generator (numpy and Pillow only): licence-clean images of the ten classes."""
