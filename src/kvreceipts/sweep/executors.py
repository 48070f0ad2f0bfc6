"""Where a sweep's tasks run: here, in local worker processes, or on a Dask cluster.

Every executor returns the results by task index, so rows come out in the grid's order
whatever order the tasks finished in: the output is the same for any worker count.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from kvreceipts.errors import UsageError
from kvreceipts.sweep.grid import run_task

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

    from kvreceipts.sweep.grid import Result, Task

    Progress = Callable[[], AbstractContextManager[Callable[[int], None] | None]]

__all__ = ["DASK_CONNECT_TIMEOUT_S", "run_tasks"]

DASK_CONNECT_TIMEOUT_S = 5
"""How long to wait for a Dask scheduler before giving up with an error."""


def run_tasks(
    tasks: Sequence[Task],
    *,
    workers: int = 1,
    dask: str | None = None,
    progress: Progress | None = None,
) -> list[Result]:
    """Run every task; ``progress()`` gives a context whose callback is told of points done.

    The progress context is entered only once worker processes exist: forking after its
    refresh thread has started is unsafe.
    """
    progress = progress or _no_progress
    if dask:
        return _run_dask(tasks, dask, progress)
    if workers <= 1 or len(tasks) <= 1:
        return _run_here(tasks, progress)
    return _run_processes(tasks, workers, progress)


def _no_progress() -> AbstractContextManager[Callable[[int], None] | None]:
    return nullcontext(None)


def _run_here(tasks: Sequence[Task], progress: Progress) -> list[Result]:
    results = []
    with progress() as advance:
        for task in tasks:
            results.append(run_task(task))
            if advance is not None:
                advance(task.points or 1)
    return results


def _run_processes(tasks: Sequence[Task], workers: int, progress: Progress) -> list[Result]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork shares the trace already read here; with other threads alive (a Dask client, a
    # test harness), forking is unsafe, so a fresh forkserver process is used instead.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(method)
    results: list[Result | None] = [None] * len(tasks)
    count = min(workers, len(tasks))
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        # Longest first (a replay at a large capacity, or a one-pass curve), so the last
        # tasks to finish are short ones and no worker idles at the end.
        order = sorted(range(len(tasks)), key=lambda i: tasks[i].cost, reverse=True)
        futures = {pool.submit(run_task, tasks[i]): i for i in order}
        with progress() as advance:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                if advance is not None:
                    advance(tasks[index].points or 1)
    return [r for r in results if r is not None]


def _run_dask(tasks: Sequence[Task], address: str, progress: Progress) -> list[Result]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UsageError("--dask needs the dask extra: pip install 'kvreceipts[dask]'") from None
    try:
        client = Client(address, timeout=f"{DASK_CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {reason}") from None
    results: list[Result | None] = [None] * len(tasks)
    try:
        # Tasks carry the trace's path or URL, not its requests: each worker reads it once.
        # A task whose worker dies is rescheduled by the scheduler on another worker.
        futures: dict[Any, int] = {
            client.submit(run_task, task, pure=False, retries=2): task.index for task in tasks
        }
        with progress() as advance:
            for future in as_completed(futures, loop=client.loop):
                index = futures[future]
                results[index] = future.result()
                if advance is not None:
                    advance(tasks[index].points or 1)
    finally:
        client.close()
    return [r for r in results if r is not None]
