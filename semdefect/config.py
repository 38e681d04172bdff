"""Load and validate the configuration: project defaults, then `--config FILE`, then `section.key=value`.

Types come from the defaults in `config.yaml` (an int key takes an int, a float key an int or a float);
choices and ranges are declared below. Every refusal names the key, and an unknown key also names the
closest valid one, so a typo costs one read of one line.
"""

from __future__ import annotations

import argparse
import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .files import write_text_atomic
from .onnx_tools import TTA_VIEWS

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"

CHOICES = {
    "data.resize": ("bilinear", "bicubic", "nearest", "area"),
    "data.normalize": ("none", "minmax", "equalize", "flatten"),
    "model.head": ("flatten", "gap", "gmp"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.fit_on": ("train", "train+val"),
    "evaluate.split": ("train", "val", "test"),
    "export.parity_split": ("train", "val", "test"),
    "quantize.format": ("qdq", "qoperator"),
    "quantize.calibrate_method": ("minmax", "entropy", "percentile"),
    "prepare.data_bar": ("none", "auto", "rows"),
    "evaluate.tta": TTA_VIEWS,
}

# (lowest allowed, highest allowed); None leaves that side open.
RANGES = {
    "data.image_size": (32, 1024),
    "data.crop_bottom": (0, None),
    "data.max_image_pixels": (1, None),
    "data.min_range": (0.0, 1.0),
    "model.dropout": (0.0, 0.95),
    "model.width": (0.25, 8.0),
    "model.blocks": (1, 5),
    "train.epochs": (1, None),
    "train.batch_size": (1, None),
    "train.learning_rate": (1e-7, 1.0),
    "train.patience": (0, None),
    "train.noise_std": (0.0, 1.0),
    "train.zoom": (1.0, 4.0),
    "train.zoom_out": (1.0, 4.0),
    "train.mixup": (0.0, 10.0),
    "train.gamma": (0.0, 2.0),
    "train.blur": (0.0, 5.0),
    "train.label_smoothing": (0.0, 0.5),
    "train.weight_decay": (0.0, 1.0),
    "train.synthetic_per_class": (0, None),
    "evaluate.batch_size": (1, None),
    "audit.folds": (3, 20),
    "audit.sheet": (0, None),
    "export.opset": (13, 21),
    "export.parity_images": (0, None),
    "export.parity_atol": (0.0, 1.0),
    "quantize.calib_images": (0, None),
    "quantize.max_accuracy_drop": (0.0, 100.0),
    "prepare.data_bar_rows": (0, None),
    "prepare.max_crop": (0.0, 0.5),
    "prepare.candidate_threshold": (-1.0, 1.0),
    "prepare.window_threshold": (-1.0, 1.0),
    "prepare.max_candidates": (1, None),
    "prepare.match_threshold": (-1.0, 1.0),
    "prepare.min_detail": (0.0, 1.0),
    "prepare.blank_match_threshold": (-1.0, 1.0),
    "prepare.low_detail": (0.0, 1.0),
    "prepare.fine_band_threshold": (-1.0, 1.0),
    "prepare.tiled_fine_band_threshold": (-1.0, 1.0),
    "prepare.blank_tiled_fine_band_threshold": (-1.0, 1.0),
    "prepare.tile_threshold": (-1.0, 1.0),
    "prepare.rare_fraction": (0.0, 1.0),
    "prepare.workers": (0, None),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Give a stage script the shared `--config FILE` option and `section.key=value` overrides."""
    parser.add_argument("--config", type=Path, help="YAML file whose keys override the project's config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, values parsed as YAML (e.g. train.epochs=5)")


def load_config(config_file: Path | None = None, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Return the resolved, validated config as a nested dict."""
    defaults = read_yaml(DEFAULT_CONFIG)
    cfg = copy.deepcopy(defaults)
    if config_file is not None:
        for section, values in read_yaml(config_file).items():
            if not isinstance(values, dict):
                raise ConfigError(f"{config_file}: section '{section}' must be a mapping of keys to values")
            for key, value in values.items():
                set_key(cfg, defaults, f"{section}.{key}", value, source=str(config_file))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text  # an unparsable value is taken as a string and then type-checked
        set_key(cfg, defaults, key.strip(), value, source="command line")
    validate(cfg)
    return cfg


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that give the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    return data


def all_keys(defaults: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{section}.{key}" for section, values in defaults.items() for key in values]


def set_key(cfg: dict, defaults: dict, dotted: str, value: Any, source: str) -> None:
    """Set one `section.key`, refusing unknown keys (with the closest valid one) and wrong types."""
    section, _, key = dotted.partition(".")
    if section not in defaults or key not in defaults[section]:
        close = difflib.get_close_matches(dotted, all_keys(defaults), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{dotted}' ({source}){hint}")
    cfg[section][key] = coerce(dotted, value, defaults[section][key])


def coerce(dotted: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of the key's default; ints are accepted for float keys."""
    expected = type(default)
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"config key '{dotted}' must be {expected.__name__}, got {value!r}")
    return value


def validate(cfg: dict[str, dict[str, Any]]) -> None:
    """Check choices, ranges and the keys that need more than a type."""
    for dotted, choices in CHOICES.items():
        value = get(cfg, dotted)
        if value not in choices:
            raise ConfigError(f"config key '{dotted}' must be one of {', '.join(map(str, choices))}, got {value!r}")
    for dotted, (low, high) in RANGES.items():
        value = get(cfg, dotted)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"config key '{dotted}' must be {bounds}, got {value!r}")
    classes = cfg["data"]["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError("config key 'data.classes' must list at least two class names")
    if len(set(classes)) != len(classes):
        raise ConfigError("config key 'data.classes' lists a class twice")
    seeds = cfg["crosscheck"]["seeds"]
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise ConfigError(f"config key 'crosscheck.seeds' must list at least one integer seed, got {seeds!r}")
    few_shot = cfg["crosscheck"]["few_shot"]
    positive = all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in few_shot)
    if not positive or len(set(few_shot)) < len(few_shot):
        raise ConfigError(f"config key 'crosscheck.few_shot' must list distinct positive integers (images per class), "
                          f"got {few_shot!r}")
    splits = cfg["audit"]["splits"]
    if not splits or len(set(splits)) < len(splits) or not all(s in ("train", "val", "test") for s in splits):
        raise ConfigError(f"config key 'audit.splits' must list distinct splits among train, val, test, got {splits!r}")
    ratios = cfg["prepare"]["ratios"]
    if len(ratios) != 3 or not all(isinstance(r, int) and r >= 0 for r in ratios) or sum(ratios) != 100:
        raise ConfigError(f"config key 'prepare.ratios' must be three whole percentages summing to 100, got {ratios!r}")


def get(cfg: dict[str, dict[str, Any]], dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return cfg[section][key]


def save_resolved(cfg: dict[str, dict[str, Any]], path: Path) -> Path:
    """Write the resolved config beside an output, so a run can be repeated exactly."""
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
