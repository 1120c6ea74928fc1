"""The flags every ``train.py`` / ``eval.py`` shares. A project adds its own flags to the parser
it gets from :func:`base_parser`; everything about the experiment itself lives in the config."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.config import Config, load_config


def base_parser(description: str, default_config: str | Path | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=str(default_config) if default_config else None,
                   help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set train.lr=1e-3")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--seed", type=int, default=0, help="base seed (rank r uses seed + r)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast (CUDA; CPU only when given explicitly)")
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="resume from a checkpoint, or 'auto': the latest run of this config and seed")
    p.add_argument("--data-root", default=None, help="dataset root (default: $DATA_ROOT or <repo>/data)")
    p.add_argument("--run-dir", default=None, help="write into this run directory instead of a new one")
    p.add_argument("--runs-root", default=None, help="parent of run directories (default: <repo>/runs)")
    p.add_argument("--no-tb", dest="tensorboard", action="store_false", help="no TensorBoard mirror")
    p.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                   help="exit right after saving epoch N's checkpoint (simulates a kill; for resume tests)")
    return p


def parse_config(args: argparse.Namespace, defaults: Mapping | None = None) -> Config:
    return load_config(args.config, args.overrides, defaults)


def config_name(args: argparse.Namespace) -> str:
    return Path(args.config).stem if args.config else "default"


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          defaults: Mapping | None = None) -> tuple[argparse.Namespace, Config]:
    args = parser.parse_args(argv)
    return args, parse_config(args, defaults)
