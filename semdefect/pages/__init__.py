"""Pages a person opens in a browser: the evaluation report and the labelling page (workstation side)."""
