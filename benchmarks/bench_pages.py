"""How fast the pages open: a labelling page of 2,000 images in headless Chromium (Debian's, as in the tests).

Generates --images synthetic SEM images (the project's generator, --size pixels) in a temporary folder, builds the
labelling page with label_images.py, opens it --runs times in a fresh headless Chromium and prints the page's size,
the time to build it, and the time from navigation to the first image shown (the page's own `load` event: the
image on screen is decoded by then), median and worst. A measurement, not a test: nothing is asserted.

usage: python benchmarks/bench_pages.py [--images 2000] [--size 512] [--runs 5]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository's package, with no install step
sys.path.insert(0, str(ROOT / "tests"))  # the tests' browser set-up: the same Chromium and driver

from browser import start

import label_images
from semdefect.synth import generate_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        generate_dataset(work / "images", per_class=-(-args.images // 10), size=args.size, seed=0, split=None,
                         difficulty=0.5)
        images = sorted((work / "images").rglob("*.png"))[:args.images]
        pool = work / "pool"
        pool.mkdir()
        for path in images:
            (pool / path.name).symlink_to(path)
        page = work / "labels.html"
        started = time.perf_counter()
        assert label_images.main([str(pool), "--output", str(page)]) == 0
        built = time.perf_counter() - started
        times = []
        for run in range(args.runs):
            driver = start(work / f"profile{run}", work / "downloads")
            try:
                driver.get(page.as_uri())  # returns after the load event
                timing = driver.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0]; return [t.loadEventEnd, "
                    "document.querySelector('#view img').complete];")
                times.append(timing[0] / 1000)
                if not timing[1]:
                    print("warning: the first image was not decoded at the load event")
            finally:
                driver.quit()
        print(f"labelling page of {len(images)} images of {args.size}x{args.size}: {page.stat().st_size / 1e6:.1f} MB, "
              f"built in {built:.1f} s")
        print(f"opened in headless Chromium, navigation to load event: median {statistics.median(times):.2f} s, "
              f"worst {max(times):.2f} s over {len(times)} runs (goal: under 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
