"""``zoo train TASK ...`` and ``zoo eval TASK ...``.

``train_main`` is LightningCLI ``fit`` for the task's LightningModule and DataModule, so every
Lightning option works (``--trainer.strategy=ddp --trainer.devices=N``, ``--ckpt_path`` to
resume, ``--print_config``). ``-c`` / ``--config`` files are looked up relative to the current
folder first, then inside the installed ``zoo.configs`` package (``-c sr/rlfn_x4.yaml``).

``eval_main`` scores a model (registry weights, an authors' file, a zoo file or a Lightning
``.ckpt`` written by ``zoo train``) with the task's evaluation function and prints a table, or
exactly one JSON object on stdout with ``--json``.

Both return a process exit code; a usage problem (unknown task, bad argument, missing data or
config) prints one ``error: ...`` line on stderr and returns 2.

This file is also runnable: ``python -m zoo.tasks.cli train sr -c sr/rlfn_x4.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import importlib.util
import inspect
import json
import math
import os
import sys
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["train_main", "eval_main", "resolve_config", "load_eval_model", "format_table", "main"]

_CONFIG_FLAGS = ("-c", "--config")


class UsageError(Exception):
    """A problem with the command line or its inputs: reported as one line, exit code 2."""


def _error(message: str) -> int:
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return 2


def _task(task: str):
    from .base import TASKS

    if task not in TASKS:
        raise UsageError(f"unknown task {task!r} (known tasks: {', '.join(TASKS)})")
    return TASKS[task]


# --------------------------------------------------------------------------------------- train


def resolve_config(value: str) -> str:
    """A config path as given if it exists, else the file of that name in ``zoo.configs``."""
    if Path(value).expanduser().is_file():
        return str(Path(value).expanduser())
    package = importlib.resources.files("zoo.configs")
    candidates = [value]
    if value.startswith("configs/"):
        candidates.append(value[len("configs/"):])
    for name in candidates:
        resource = package.joinpath(name)
        if resource.is_file():
            return str(resource)
    shipped = sorted(
        f"{d.name}/{f.name}" for d in package.iterdir() if d.is_dir() for f in d.iterdir() if f.name.endswith(".yaml")
    )
    raise UsageError(f"config file {value} not found here nor in zoo.configs (shipped: {', '.join(shipped) or 'none'})")


def _resolve_config_args(argv: list[str]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in _CONFIG_FLAGS:
            value = next(it, None)
            if value is None:
                raise UsageError(f"{arg} needs a file")
            out += [arg, resolve_config(value)]
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


@contextlib.contextmanager
def _relaunchable(task: str, argv: list[str]) -> Iterator[None]:
    """Let Lightning's DDP launcher re-run this training from ``python -c`` or a REPL.

    For ranks > 0 Lightning runs ``python <sys.argv[0]> <sys.argv[1:]>`` (or ``python -m
    <__main__.__spec__.name> ...``). When the process was started by ``zoo train`` or ``python -m
    ...`` that command is right; from ``python -c`` there is no script to re-run, so point the
    launcher at ``python -m zoo.tasks.cli train TASK ARGV`` for the time of the run.
    """
    import __main__

    if (
        os.environ.get("LOCAL_RANK") is not None
        or getattr(__main__, "__spec__", None) is not None
        or (sys.argv and os.path.isfile(sys.argv[0]))
    ):
        yield
        return
    saved_argv = sys.argv
    sys.argv = [sys.argv[0] if sys.argv else "-c", "train", task, *argv]
    __main__.__spec__ = importlib.util.find_spec("zoo.tasks.cli")
    try:
        yield
    finally:
        sys.argv = saved_argv
        __main__.__spec__ = None


def _picks_module_subclass(argv: list[str]) -> bool:
    """Whether a config file (``model: {class_path: ...}``) or the command line
    (``--model.class_path``) picks a subclass of the task's LightningModule, e.g.
    ``zoo.tasks.sr.distill.SRDistillModule``. Only then does LightningCLI run in subclass mode,
    so flat configs (``model: {model: rlfn_x4, ...}``) parse and print exactly as before."""
    import yaml

    it = iter(argv)
    for arg in it:
        path = None
        if arg in _CONFIG_FLAGS:
            path = next(it, None)
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith("--model.class_path"):
            return True
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                cfg = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue  # LightningCLI reports it
        if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) and "class_path" in cfg["model"]:
            return True
    return False


def train_main(task: str, argv: list[str]) -> int:
    """Run LightningCLI ``fit`` for ``task`` with the command-line arguments ``argv``.

    A config whose ``model`` section names a ``class_path`` (a subclass of the task's module,
    such as the distillation module of ``sr/dsclora_x4.yaml``) runs in LightningCLI's subclass mode.
    """
    from jsonargparse import ArgumentError
    from lightning.pytorch.cli import LightningCLI

    from zoo.hub import CheckpointError
    from zoo.registry import UnknownModelError

    from .base import TaskConfigError

    try:
        spec = _task(task)
        argv = _resolve_config_args(list(argv))
        with _relaunchable(task, argv), warnings.catch_warnings():
            # ``args`` is how we pass the command line (sys.argv holds `zoo train TASK`), and an
            # absent validation folder is a valid choice: neither deserves a warning.
            warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended")
            warnings.filterwarnings("ignore", message=r".*Total length of `list` across ranks is zero")
            LightningCLI(
                spec.module_cls,
                spec.datamodule_cls,
                args=["fit", *argv],
                subclass_mode_model=_picks_module_subclass(argv),
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": f"zoo train {task}", "exit_on_error": False},
                auto_configure_optimizers=False,  # the task module's configure_optimizers is the recipe
            )
    except SystemExit as e:  # --help, --print_config
        return e.code if isinstance(e.code, int) else (0 if e.code is None else _error(e.code))
    except (UsageError, ArgumentError, TaskConfigError, FileNotFoundError, NotADirectoryError, UnknownModelError, CheckpointError) as e:
        return _error(e)
    return 0


# ---------------------------------------------------------------------------------------- eval


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def _add_task_options(parser: argparse.ArgumentParser, eval_fn) -> list[str]:
    """Flags for the eval function's options (its parameters after ``model, data_root``),
    typed from the signature: ``scale: int`` -> ``--scale N`` (required when it has no default)."""
    hints = typing.get_type_hints(eval_fn)
    try:
        from docstring_parser import parse  # ships with jsonargparse[signatures]

        docs = {d.arg_name: d.description for d in parse(eval_fn.__doc__ or "").params}
    except ImportError:  # pragma: no cover
        docs = {}
    names = []
    for p in list(inspect.signature(eval_fn).parameters.values())[2:]:
        if p.name == "device" or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        kind = hints.get(p.name, str)
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if args:
            kind = args[0]
        if kind not in (int, float, str, bool):
            kind = str
        flags = [f"--{p.name.replace('_', '-')}"] + ([f"--{p.name}"] if "_" in p.name else [])
        required = p.default is inspect.Parameter.empty
        help_ = " ".join((docs.get(p.name) or "").split()) + ("" if required else f" (default: {p.default})")
        if kind is bool:
            parser.add_argument(
                *flags, dest=p.name, action=argparse.BooleanOptionalAction, default=p.default if not required else False, help=help_
            )
        else:
            parser.add_argument(
                *flags, dest=p.name, type=kind, required=required, default=None if required else p.default,
                metavar="N" if kind in (int, float) else p.name.upper(), help=help_.strip(),
            )
        names.append(p.name)
    return names


def _is_lightning_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and ("pytorch-lightning_version" in obj or "hyper_parameters" in obj)


def _read_lightning_checkpoint(path: str) -> dict | None:
    """The contents of a Lightning ``.ckpt`` (read with ``weights_only=True``), or None if the
    file is some other kind of checkpoint."""
    import pickle
    import zipfile

    import torch
    from lightning.fabric.utilities.data import AttributeDict

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UsageError(f"cannot read checkpoint {path}: {e}") from None
    if head != b"PK\x03\x04":  # not a torch zip file: safetensors, legacy pickle ...
        return None
    try:
        with torch.serialization.safe_globals([AttributeDict]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError):
        return None  # zoo.create's reader gives the precise error
    return obj if _is_lightning_checkpoint(obj) else None


def load_eval_model(model: str, checkpoint: str | None = None, pretrained: bool = False):
    """Build ``model`` with weights from the registry, a weight file or a ``zoo train`` ``.ckpt``.

    A Lightning checkpoint rebuilds the network with the ``model_args`` it was trained with and
    loads its ``state_dict`` with the ``net.`` prefix of :class:`~zoo.tasks.base.ZooModule` removed;
    a ``zoo_data_cfg`` entry the task saved there (the preprocessing it trained with) goes into
    ``net.pretrained_cfg``.
    """
    import zoo
    from zoo.hub import apply_state_dict
    from zoo.registry import get_entry, split_name

    from .base import NET_PREFIX

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UsageError(f"checkpoint {checkpoint} does not exist")
    ckpt = _read_lightning_checkpoint(checkpoint) if checkpoint else None
    if ckpt is None:
        return zoo.create(model, pretrained=pretrained, checkpoint_path=checkpoint)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    trained = hparams.get("model")
    if trained and split_name(str(trained))[0] != split_name(model)[0]:
        raise UsageError(f"{checkpoint} was trained for model {trained!r}, not {model!r}")
    net = zoo.create(model, pretrained=False, **dict(hparams.get("model_args") or {}))
    sd = {k[len(NET_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)}
    if not sd:
        raise UsageError(f"{checkpoint} holds no '{NET_PREFIX}*' weights (is it a zoo train checkpoint?)")
    apply_state_dict(net, sd, get_entry(model).name, source=str(checkpoint))
    # The preprocessing the task trained with (e.g. classification's input size, crop, class names).
    trained_cfg = ckpt.get("zoo_data_cfg") if isinstance(ckpt.get("zoo_data_cfg"), dict) else {}
    net.pretrained_cfg = {**getattr(net, "pretrained_cfg", {}), **trained_cfg, "source": f"file:{checkpoint}"}
    return net


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if value == math.inf else f"{value:.4f}"
    return str(value)


def format_table(result: dict, console=None) -> None:
    """Print an eval result as a table: one row per image, then the mean."""
    from rich.console import Console
    from rich.table import Table

    rows = result.get("per_image") or result.get("per_file") or []
    metrics = [k for k, v in result.items() if isinstance(v, float) and k != "seconds"]
    title = f"{result.get('model', '')} on {result.get('data', '')}" + (f" (x{result['scale']})" if "scale" in result else "")
    table = Table(title=title)
    columns = [k for k in (rows[0] if rows else {}) if k not in metrics] or ["name"]
    for c in columns:
        table.add_column(c)
    for m in metrics:
        table.add_column(m, justify="right")
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in columns), *(_fmt(r.get(m, "")) for m in metrics))
    table.add_section()
    table.add_row(f"mean of {result.get('num_images', len(rows))}", *([""] * (len(columns) - 1)), *(_fmt(result[m]) for m in metrics), style="bold")
    (console or Console()).print(table)


def eval_main(task: str, argv: list[str]) -> int:
    """``zoo eval TASK --model NAME [--checkpoint F] [--pretrained] --data DIR [--json] [--device D] ...``

    Task options come from the task's evaluation function (for ``sr``: ``--scale N``,
    ``--tile N``, ``--tile-overlap N``).
    """
    import torch

    from zoo.hub import CheckpointError

    try:
        spec = _task(task)
        parser = _Parser(prog=f"zoo eval {task}", description=f"Evaluate a model on a {task} benchmark folder.")
        parser.add_argument("--model", required=True, help="registry name, e.g. rlfn_x4 (see `zoo list`)")
        parser.add_argument("--checkpoint", help="weight file: the authors', a zoo file or a `zoo train` .ckpt")
        parser.add_argument("--pretrained", action="store_true", help="use the registry's published weights")
        parser.add_argument("--data", required=True, help="benchmark folder")
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
        options = _add_task_options(parser, spec.eval_fn)
        args = parser.parse_args(list(argv))
        if not Path(args.data).is_dir():
            raise UsageError(f"data folder {args.data} does not exist")
        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            raise UsageError(f"bad --device {args.device!r}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: CUDA is not available")
        model = load_eval_model(args.model, args.checkpoint, args.pretrained)
        result = spec.eval_fn(model, args.data, device=device, **{k: getattr(args, k) for k in options})
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except (UsageError, FileNotFoundError, NotADirectoryError, CheckpointError) as e:
        return _error(e)
    except ValueError as e:  # unknown model name, scale mismatch, bad images: still a usage problem
        return _error(e)
    if args.json:
        print(json.dumps(_json_safe(result), allow_nan=False))
    else:
        format_table(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.tasks.cli {train,eval} TASK ...`` (also what DDP ranks > 0 run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("train", "eval"):
        return _error("usage: python -m zoo.tasks.cli {train,eval} TASK [ARGS ...]")
    command, task, rest = argv[0], argv[1], argv[2:]
    return train_main(task, rest) if command == "train" else eval_main(task, rest)


if __name__ == "__main__":
    sys.exit(main())
