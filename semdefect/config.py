"""The configuration: one typed definition per key, defaults in `config.yaml`, `--config FILE`, `section.key=value`.

Every key is a field of one of the section classes below: its type is the annotation, its allowed values the
`key(...)` beside it; its default and its one-line meaning are in `config.yaml` (package data, so any folder works).
Values are read as attributes (`cfg.train.epochs`). Every refusal names the key, and an unknown key also names the
closest valid one, so a typo costs one read of one line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from semdefect.board.errors import ConfigError
from semdefect.board.files import write_text_atomic
from semdefect.board.images import NORMALIZE_METHODS, RESIZE_FILTERS, Preprocess

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"
SPLIT_NAMES = ("train", "val", "test")


def key(choices: Sequence[Any] | None = None, low: float | None = None, high: float | None = None,
        check: Callable[[str, Any], None] | None = None) -> Any:
    """A config field: allowed `choices`, or a range from `low` to `high` (None leaves that side open), or a `check`
    that raises ConfigError for anything a type and a range cannot say."""
    return dataclasses.field(metadata={"choices": choices, "low": low, "high": high, "check": check})


def class_list(dotted: str, value: list[Any]) -> None:
    if len(value) < 2 or not all(isinstance(c, str) and c for c in value):
        raise ConfigError(f"config key '{dotted}' must list at least two class names")
    if len(set(value)) != len(value):
        raise ConfigError(f"config key '{dotted}' lists a class twice")


def seed_list(dotted: str, value: list[Any]) -> None:
    if not value or not all(is_int(seed) for seed in value):
        raise ConfigError(f"config key '{dotted}' must list at least one integer seed, got {value!r}")


def few_shot_list(dotted: str, value: list[Any]) -> None:
    if not all(is_int(k) and k > 0 for k in value) or len(set(value)) < len(value):
        raise ConfigError(f"config key '{dotted}' must list distinct positive integers (images per class), "
                          f"got {value!r}")


def split_list(dotted: str, value: list[Any]) -> None:
    if not value or len(set(value)) < len(value) or not all(s in SPLIT_NAMES for s in value):
        raise ConfigError(f"config key '{dotted}' must list distinct splits among train, val, test, got {value!r}")


def ratio_list(dotted: str, value: list[Any]) -> None:
    if len(value) != 3 or not all(is_int(r) and r >= 0 for r in value) or sum(value) != 100:
        raise ConfigError(f"config key '{dotted}' must be three whole percentages summing to 100, got {value!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Data:
    root: str = key()
    classes: list[str] = key(check=class_list)
    image_size: int = key(low=32, high=1024)
    resize: str = key(choices=tuple(RESIZE_FILTERS))
    crop_bottom: int = key(low=0)
    normalize: str = key(choices=NORMALIZE_METHODS)
    max_image_pixels: int = key(low=1)

    def preprocess(self) -> Preprocess:
        """The preprocessing these keys describe: what the model trains on and what its file declares."""
        return Preprocess(self.image_size, self.resize, self.crop_bottom, self.normalize, self.max_image_pixels)


@dataclass
class Model:
    backbone: str = key(choices=("cnn", "efficientnet_lite0"))
    pretrained: bool = key()
    head: str = key(choices=("flatten", "gap", "gmp"))
    width: float = key(low=0.25, high=8.0)
    blocks: int = key(low=1, high=5)
    batchnorm: bool = key()


@dataclass
class Train:
    epochs: int = key(low=1)
    fit_on: str = key(choices=("train", "train+val"))
    batch_size: int = key(low=1)
    learning_rate: float = key(low=1e-7, high=1.0)
    lr_schedule: str = key(choices=("constant", "cosine"))
    seed: int = key()
    patience: int = key(low=0)
    augment: bool = key()
    zoom: float = key(low=1.0, high=4.0)
    balance: str = key(choices=("none", "sources"))
    randconv: float = key(low=0.0, high=1.0)
    init_from: str = key()
    resume: bool = key()
    output: str = key()
    tensorboard: bool = key()


@dataclass
class Review:
    holdout: float = key(low=0.0, high=0.5)
    target: str = key(choices=("accuracy", "coverage"))
    accuracy: float = key(low=0.01, high=1.0)
    coverage: float = key(low=0.01, high=1.0)


@dataclass
class Adapt:
    head_epochs: int = key(low=0)
    views: int = key(low=1)
    epochs: int = key(low=0)
    learning_rate: float = key(low=1e-7, high=1.0)
    new_share: float = key(low=0.05, high=0.95)
    base_per_class: int = key(low=0)
    pseudo_labels: bool = key()
    pseudo_share: float = key(low=0.01, high=1.0)
    seed: int = key()


@dataclass
class Evaluate:
    split: str = key(choices=SPLIT_NAMES)
    batch_size: int = key(low=1)
    out: str = key()


@dataclass
class Report:
    max_images: int = key(low=0)
    thumbnail: int = key(low=32, high=1024)


@dataclass
class Export:
    output: str = key()
    opset: int = key(low=13, high=21)
    parity_split: str = key(choices=SPLIT_NAMES)
    parity_images: int = key(low=0)
    parity_atol: float = key(low=0.0, high=1.0)


@dataclass
class Quantize:
    output: str = key()
    float_first_block: bool = key()
    float_head: bool = key()
    calib_images: int = key(low=0)
    max_accuracy_drop: float = key(low=0.0, high=100.0)


@dataclass
class Tflite:
    output: str = key()
    per_tensor: bool = key()
    calib_images: int = key(low=0)
    max_accuracy_drop: float = key(low=0.0, high=100.0)
    vela: bool = key()


@dataclass
class Prepare:
    ratios: list[int] = key(check=ratio_list)
    seed: int = key()
    data_bar: str = key(choices=("none", "auto", "rows"))
    data_bar_rows: int = key(low=0)
    workers: int = key(low=0)


@dataclass
class Audit:
    splits: list[str] = key(check=split_list)
    folds: int = key(low=3, high=20)
    seed: int = key()
    sheet: int = key(low=0)
    out: str = key()


@dataclass
class Crosscheck:
    sources: list[str] = key()
    manifest: str = key()
    manifest_column: str = key()
    seeds: list[int] = key(check=seed_list)
    few_shot: list[int] = key(check=few_shot_list)
    adapt: list[int] = key(check=few_shot_list)
    leave_out: str = key(choices=("sources", "classes", "new_classes"))
    new_classes: int = key(low=1)
    draws: int = key(low=1)
    shots: int = key(low=1)
    out: str = key()
    reuse: bool = key()


@dataclass
class Config:
    """The resolved configuration of a run, one attribute per section."""

    data: Data
    model: Model
    train: Train
    review: Review
    adapt: Adapt
    evaluate: Evaluate
    report: Report
    export: Export
    quantize: Quantize
    tflite: Tflite
    prepare: Prepare
    audit: Audit
    crosscheck: Crosscheck

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {field.name: hints[field.name] for field in dataclasses.fields(Config)}


def schema() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every key as 'section.key' -> (its type, its allowed values)."""
    keys = {}
    for section, cls in section_classes().items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            keys[f"{section}.{field.name}"] = (hints[field.name], dict(field.metadata))
    return keys


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Give a command the shared `--config FILE` option and `section.key=value` overrides."""
    parser.add_argument("--config", type=Path, help="YAML file whose keys override the defaults of config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, values parsed as YAML (e.g. train.epochs=5)")


def load_config(config_file: Path | None = None, overrides: list[str] | None = None) -> Config:
    """The defaults, then `config_file`'s keys, then the overrides; validated."""
    keys = schema()
    values = flatten(read_yaml(DEFAULT_CONFIG))
    if set(values) != set(keys):  # the package's own files disagree: a bug, not a user's mistake
        raise RuntimeError(f"{DEFAULT_CONFIG} and the config schema differ: {sorted(set(values) ^ set(keys))}")
    if config_file is not None:
        for section, entries in read_yaml(config_file).items():
            if not isinstance(entries, dict):
                raise ConfigError(f"{config_file}: section '{section}' must be a mapping of keys to values")
            for name, value in entries.items():
                values[f"{section}.{name}"] = checked(keys, f"{section}.{name}", value, source=str(config_file))
    for item in overrides or []:
        dotted, sep, text = item.partition("=")
        if not sep or not dotted:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text  # an unparsable value is taken as a string and then type-checked
        values[dotted.strip()] = checked(keys, dotted.strip(), value, source="command line")
    for dotted, value in values.items():
        validate(dotted, value, keys[dotted][1])
    return build(values)


def flatten(nested: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{name}": value for section, entries in nested.items() for name, value in entries.items()}


def build(values: dict[str, Any]) -> Config:
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in values.items():
        section, _, name = dotted.partition(".")
        sections.setdefault(section, {})[name] = copy.deepcopy(value)
    return Config(**{name: cls(**sections[name]) for name, cls in section_classes().items()})


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


def checked(keys: dict[str, tuple[Any, dict[str, Any]]], dotted: str, value: Any, source: str) -> Any:
    """`value` for one `section.key`, refusing unknown keys (with the closest valid one) and wrong types."""
    if dotted not in keys:
        close = difflib.get_close_matches(dotted, list(keys), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{dotted}' ({source}){hint}")
    return coerce(dotted, value, keys[dotted][0])


def coerce(dotted: str, value: Any, expected: Any) -> Any:
    """Check `value` against the key's type; ints are accepted for float keys."""
    kind = typing.get_origin(expected) or expected
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = is_int(value)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"config key '{dotted}' must be {kind.__name__}, got {value!r}")
    return value


def validate(dotted: str, value: Any, rules: dict[str, Any]) -> None:
    """Check a key's choices, range or own rule."""
    choices, low, high = rules["choices"], rules["low"], rules["high"]
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{dotted}' must be one of {', '.join(map(str, choices))}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"config key '{dotted}' must be {bounds}, got {value!r}")
    if rules["check"] is not None:
        rules["check"](dotted, value)


def save_resolved(cfg: Config, path: Path) -> Path:
    """Write the resolved config beside an output, so a run can be repeated exactly."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path
