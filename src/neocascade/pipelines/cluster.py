"""Where ``detect.py`` runs its input files: a serial loop, or Dask (local, SLURM, an existing scheduler).

Each class is built from ``conf/cluster/<name>.yaml`` and offers one method,
``map(fn, items, on_result=..., on_lost=...)``: call ``fn(*item)`` for every item and hand each result
to ``on_result`` as it arrives (in completion order, on the calling process). A Dask task whose worker
dies is run again on another worker; an item that took down workers more often than the scheduler
allows (``distributed.scheduler.allowed-failures``, 3) goes to ``on_lost(item, error)`` instead, so one
poisonous input cannot stop the run. Whatever finished before a crash of the caller is already handed
over, so the caller's manifest makes a rerun resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

from neocascade.errors import input_error

log = logging.getLogger(__name__)

Item = Sequence[Any]


class Serial:
    """Today's loop: every item in this process, in order (``cluster=none``)."""

    torch_threads = None  # leave torch's own setting alone

    def map(self, fn: Callable[..., Any], items: Iterable[Item], *, on_result: Callable[[Any], None],
            on_lost: Callable[[Item, BaseException], None] | None = None) -> None:
        """Call ``fn(*item)`` for each item in order and pass each result to ``on_result`` (``on_lost`` is unused)."""
        for item in items:
            on_result(fn(*item))

    def __repr__(self) -> str:
        return "Serial()"


class _Dask:
    """Submit every item as one Dask task and collect results as they complete."""

    def __init__(self, *, torch_threads: int | None = 1, retries: int = 2) -> None:
        self.torch_threads = _count("cluster.torch_threads", torch_threads, minimum=1, allow_none=True)
        self.retries = _count("cluster.retries", retries, minimum=0)

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A connected ``distributed.Client`` for the duration of the block."""
        raise NotImplementedError

    def map(self, fn: Callable[..., Any], items: Iterable[Item], *, on_result: Callable[[Any], None],
            on_lost: Callable[[Item, BaseException], None] | None = None) -> None:
        """Run ``fn(*item)`` as Dask tasks; ``on_result`` gets each result here as soon as it is done.

        An item whose task kept killing its workers (``KilledWorker``) goes to ``on_lost`` when given;
        any other error in a task is raised here.
        """
        from distributed import KilledWorker, as_completed

        items = list(items)
        if not items:
            return
        with _quiet("distributed"), self.client() as client:
            log.info("dask: %s, dashboard %s", _describe(client), client.dashboard_link)
            futures = {client.submit(fn, *item, pure=False, retries=self.retries): item for item in items}
            try:
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except KilledWorker as exc:
                        if on_lost is None:
                            raise
                        on_lost(futures[future], exc)
                        continue
                    on_result(result)
            except BaseException:
                client.cancel(list(futures))
                raise


class LocalDask(_Dask):
    """A ``distributed.LocalCluster`` on this machine (``cluster=local``, the default).

    Parameters
    ----------
    n_workers : int or None
        Worker processes; None gives one per usable core.
    threads_per_worker : int
        Tasks run at once by a worker; 1 with ``torch_threads=1`` keeps one busy thread per core.
    processes : bool
        False runs the workers as threads of this process (tests, debugging).
    dashboard_address : str or None
        Where the dashboard listens (``":0"``: a free port); None serves none.
    memory_limit : str or int
        Per worker, as Dask accepts it (``"auto"``: the machine's memory shared evenly).
    min_inputs : int
        Fewer input files than this run in the serial loop: a cluster is not worth starting for one file.
    torch_threads, retries
        Torch intra-op threads in each worker; re-runs of a task that raised (a task whose worker
        died is rerun by the scheduler, up to ``distributed.scheduler.allowed-failures`` deaths).
    """

    def __init__(
        self,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        processes: bool = True,
        dashboard_address: str | None = ":0",
        memory_limit: str | int = "auto",
        min_inputs: int = 2,
        torch_threads: int | None = 1,
        retries: int = 2,
    ) -> None:
        super().__init__(torch_threads=torch_threads, retries=retries)
        self.n_workers = _count("cluster.n_workers", n_workers, minimum=1, allow_none=True) or usable_cores()
        self.threads_per_worker = _count("cluster.threads_per_worker", threads_per_worker, minimum=1)
        self.processes = bool(processes)
        self.dashboard_address = dashboard_address
        self.memory_limit = memory_limit
        self.min_inputs = _count("cluster.min_inputs", min_inputs, minimum=0)

    def map(self, fn: Callable[..., Any], items: Iterable[Item], *, on_result: Callable[[Any], None],
            on_lost: Callable[[Item, BaseException], None] | None = None) -> None:
        """As :meth:`_Dask.map`, but in this process when there are fewer than ``min_inputs`` items."""
        items = list(items)
        if len(items) < self.min_inputs:
            Serial().map(fn, items, on_result=on_result)
            return
        super().map(fn, items, on_result=on_result, on_lost=on_lost)

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """Start the LocalCluster, connect, and close both afterwards.

        Worker processes get Dask's thread limits (``OMP_NUM_THREADS=1``, ...) but not its
        ``MALLOC_TRIM_THRESHOLD_``: it switches off glibc's adaptive mmap threshold, so every
        quadrant-sized temporary is mapped and zeroed afresh (measured: +70 % CPU per quadrant).
        """
        import dask
        from distributed import Client, LocalCluster

        environ = {key: value for key, value in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                   if key != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(
                n_workers=self.n_workers, threads_per_worker=self.threads_per_worker, processes=self.processes,
                dashboard_address=self.dashboard_address, memory_limit=self.memory_limit,
            )
        with cluster, Client(cluster) as client:
            yield client

    def __repr__(self) -> str:
        return (f"LocalDask(n_workers={self.n_workers}, threads_per_worker={self.threads_per_worker}, "
                f"processes={self.processes}, torch_threads={self.torch_threads})")


class SlurmDask(_Dask):
    """Workers started as SLURM jobs by ``dask_jobqueue.SLURMCluster`` (``cluster=slurm``).

    Parameters
    ----------
    jobs : int
        SLURM jobs to request (``cluster.scale(jobs=...)``); each runs ``options.processes`` workers.
    options : mapping
        Keyword arguments of ``SLURMCluster`` (queue, account, cores, processes, memory, walltime, ...).
    torch_threads, retries
        As for :class:`LocalDask`.
    """

    def __init__(self, *, jobs: int = 1, options: dict | None = None, torch_threads: int | None = 1,
                 retries: int = 2) -> None:
        super().__init__(torch_threads=torch_threads, retries=retries)
        self.jobs = _count("cluster.jobs", jobs, minimum=1)
        self.options = {key: value for key, value in dict(options or {}).items() if value is not None}

    def build(self) -> Any:
        """The ``SLURMCluster`` object (its scheduler runs here); no job is submitted until it is scaled."""
        from dask_jobqueue import SLURMCluster

        try:
            return SLURMCluster(**self.options)
        except (TypeError, ValueError) as exc:
            raise input_error("cluster.options", f"SLURMCluster refused them: {exc}") from None

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """Build the cluster, submit ``jobs`` SLURM jobs, connect; cancel the jobs afterwards."""
        from distributed import Client

        with self.build() as cluster:
            cluster.scale(jobs=self.jobs)
            with Client(cluster) as client:
                yield client

    def __repr__(self) -> str:
        return f"SlurmDask(jobs={self.jobs}, options={self.options})"


class AddressDask(_Dask):
    """Connect to a running Dask scheduler (``cluster=address cluster.address=tcp://host:8786``).

    The workers belong to whoever started them; set their threads there (``--nthreads 1``).
    """

    def __init__(self, *, address: str, timeout: float = 30.0, torch_threads: int | None = 1, retries: int = 2) -> None:
        super().__init__(torch_threads=torch_threads, retries=retries)
        if not isinstance(address, str) or not address or address == "???":
            raise input_error("cluster.address", "required: the scheduler's address", expected="tcp://host:8786",
                              found=address)
        self.address = address
        self.timeout = float(timeout)

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """Connect to the scheduler; closing the client leaves the cluster running."""
        from distributed import Client

        try:
            client = Client(self.address, timeout=self.timeout)
        except OSError as exc:
            raise input_error("cluster.address", f"no Dask scheduler answers at {self.address!r} ({exc})") from None
        with client:
            yield client

    def __repr__(self) -> str:
        return f"AddressDask(address={self.address!r})"


@contextlib.contextmanager
def _quiet(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise logger ``name`` to ``level`` for the block: Dask's start/stop chatter is not the user's news."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(max(level, before))
    try:
        yield
    finally:
        logger.setLevel(before)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _describe(client: Any) -> str:
    """``n workers, t threads`` of a connected client."""
    workers = client.scheduler_info().get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    return f"{len(workers)} workers, {threads} threads"


def _count(key: str, value: Any, *, minimum: int, allow_none: bool = False) -> int | None:
    """Check an integer option >= ``minimum`` (None where allowed), naming its config key."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise input_error(key, f"must be an integer >= {minimum}", found=value)
    return value
