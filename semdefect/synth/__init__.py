"""The synthetic SEM image generator (numpy and Pillow only): licence-clean images of the ten classes.

The pipeline needs a dataset that runs anywhere and may be committed, and real SEM images are third-party.
The images are made the way an SEM image is, one module per step:

- `scenes`: the wafer (a line/space grating, a contact-hole array or a polished film) as maps over the grid;
- `defects`: each class's defect edited into that wafer;
- `render`: the secondary-electron image of the scene, with blur, charging, jitter, noise and a data bar;
- `dataset`: the public API below, one image from its own random stream, datasets and contact sheets;
- `primitives`: the array tools they share (grids, blur, smooth noise, masks, shapes).
"""

from semdefect.synth.dataset import (
    MIN_SIZE,
    SPLITS,
    UsageError,
    check_params,
    contact_sheet,
    generate_dataset,
    generate_image,
    image_rng,
    split_counts,
    write_png,
)

__all__ = [
    "MIN_SIZE",
    "SPLITS",
    "UsageError",
    "check_params",
    "contact_sheet",
    "generate_dataset",
    "generate_image",
    "image_rng",
    "split_counts",
    "write_png",
]
