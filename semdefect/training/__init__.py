"""Training: the Keras models, their .keras files with metadata inside, augmentation and the fit loop."""
