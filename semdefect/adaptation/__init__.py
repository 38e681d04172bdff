"""A trained model at a new fab: adapt it with a few labelled images (and unlabelled ones) of the new source."""
