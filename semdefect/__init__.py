"""semdefect: SEM wafer-defect classification, from image folders to an INT8 model on an edge board."""

__version__ = "0.2.0"

# The ten defect classes, sorted as Keras sorts folder names; the model's output order.
CLASS_NAMES = (
    "Bridge", "clean", "cmp", "contamination", "crack", "ler", "opens", "other", "particle", "via",
)
