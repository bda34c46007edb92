"""Progress bars for long non-training work (downloads, eval, bench), from rich."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Callable, TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    return os.environ.get("ZOO_NO_PROGRESS", "") == "" and sys.stderr.isatty()


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.console import Console

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr when it is a terminal; silently otherwise."""
    if not _enabled():
        yield from items
        return
    with _progress() as p:
        task = p.add_task(description, total=total if total is not None else len(items))  # type: ignore[arg-type]
        for item in items:
            yield item
            p.advance(task)


@contextlib.contextmanager
def download_progress(total: int, name: str) -> Iterator[Callable[[int], None]]:
    if not _enabled():
        yield lambda n: None
        return
    with _progress() as p:
        task = p.add_task(f"downloading {name}", total=total or None)
        yield lambda n: p.advance(task, n)
