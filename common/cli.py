"""The flags every ``train.py`` / ``eval.py`` shares. A project adds its own flags to the parser
it gets from :func:`base_parser` (training) or :func:`eval_parser`; everything about the
experiment itself lives in the config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.config import Config, Rule, load_config
from common.projects import REPO_ROOT


def default_config(project: str) -> Path:
    """``<repo>/<project>/configs/synthetic.yaml``: the embedded set, every script's default."""
    return REPO_ROOT / project / "configs" / "synthetic.yaml"


def _shared(description: str, default_config: str | Path | None) -> argparse.ArgumentParser:
    install_error_hook()  # an entry point: user errors print one message naming the file, not a traceback
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
    p.add_argument("--data-root", default=None, help="dataset root (default: $DATA_ROOT or <repo>/data)")
    p.add_argument("--runs-root", default=None, help="parent of run directories (default: $RUNS_ROOT or <repo>/runs)")
    return p


def base_parser(description: str, default_config: str | Path | None = None) -> argparse.ArgumentParser:
    """The training parser: the shared flags plus ``--resume``, ``--run-dir``, ``--no-tb``."""
    p = _shared(description, default_config)
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="resume from a checkpoint, or 'auto': the latest run of this config, seed and overrides")
    p.add_argument("--allow-world-size-change", action="store_true",
                   help="resume a checkpoint written by a different number of processes (weights and "
                        "optimizer restored; per-rank RNG streams restart, so the resume is not exact)")
    p.add_argument("--run-dir", default=None, help="write into this run directory instead of a new one")
    p.add_argument("--no-tb", dest="tensorboard", action="store_false", help="no TensorBoard mirror")
    p.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                   help="exit right after saving epoch N's checkpoint (a graceful stop; kill tests use "
                        "common.testing.kill_and_resume)")
    return p


def eval_parser(description: str, default_config: str | Path | None = None) -> argparse.ArgumentParser:
    """The evaluation parser: the shared flags plus where the checkpoint comes from
    (``--checkpoint``, ``--run-dir``, else the latest run of ``--config`` and ``--seed``) and
    where results go (``--out``; default: the checkpoint's run directory)."""
    p = _shared(description, default_config)
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a checkpoint file (default: the latest run of --config/--seed)")
    p.add_argument("--run-dir", default=None, help="evaluate this run directory's checkpoints/last.pt")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write results and figures here (default: the checkpoint's run directory; "
                        "required for a checkpoint outside a run directory)")
    return p


def tool_parser(description: str | None, project: str | None = None, *, data_root: bool = True
                ) -> argparse.ArgumentParser:
    """The prologue of a project's tool script (data generator and checker, curation, embedders):
    ``--config`` (default: ``<project>/configs/synthetic.yaml``; none without ``project``),
    ``--set KEY=VALUE`` (repeatable) and, unless ``data_root=False``, ``--data-root``. The
    description is printed as written (a module docstring with its usage lines)."""
    install_error_hook()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(default_config(project)) if project else None, help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    if data_root:
        p.add_argument("--data-root", default=None, help="dataset root (default: $DATA_ROOT or <repo>/data)")
    return p


def parse_config(args: argparse.Namespace, defaults: Mapping | None = None,
                 rules: Mapping[str, Rule] | None = None) -> Config:
    return load_config(args.config, args.overrides, defaults, rules)


def config_name(args: argparse.Namespace) -> str:
    return Path(args.config).stem if args.config else "default"


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          defaults: Mapping | None = None, rules: Mapping[str, Rule] | None = None,
          ) -> tuple[argparse.Namespace, Config]:
    """Parse ``argv`` and resolve the config (schema ``defaults``, ``rules``): every config error
    is raised here, before anything runs."""
    args = parser.parse_args(argv)
    return args, parse_config(args, defaults, rules)


# ---- errors the user can act on: one message, no traceback -------------------------------------
TRACEBACK_ENV = "REPRO_TRACEBACK"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a problem with the user's input (config, data, checkpoint, run
    directory) or a refusal (non-finite training state): their message names the file and record."""
    from common.checkpoint import CheckpointError
    from common.config import ConfigError
    from common.data import DataFormatError, DatasetNotFoundError
    from common.results import PaperYamlError
    from common.run import ResumeError, RunError
    from common.runtime import NonFiniteError
    return (ConfigError, DataFormatError, DatasetNotFoundError, CheckpointError, ResumeError, RunError,
            NonFiniteError, PaperYamlError)


def _error_hook(exc_type, exc, tb) -> None:
    if issubclass(exc_type, user_errors()) and not os.environ.get(TRACEBACK_ENV):
        sys.stderr.write(f"error: {exc_type.__name__}: {exc}\n"
                         f"(the traceback is shown with {TRACEBACK_ENV}=1)\n")
        sys.stderr.flush()
        return
    sys.__excepthook__(exc_type, exc, tb)


def install_error_hook() -> None:
    """Print user errors (:func:`user_errors`) as one message instead of a traceback; the process
    still exits with status 1. Every other exception keeps its traceback. :func:`base_parser` and
    :func:`eval_parser` call this (every entry point builds one); a run's own hook (``common.run``) chains to it after writing the error into ``train.log``."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _error_hook
