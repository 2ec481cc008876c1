"""Glue shared by the pipelines: bad input as one stderr line, the run folder, Hydra job facts.

Importing this module registers the ``unique_dir`` config resolver that ``conf/hydra/default.yaml``
names its run and sweep folders with (every entry script imports a pipeline, which imports this).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from neocascade.errors import InputError
from neocascade.utils.atomic import check_output_dir, save_text

log = logging.getLogger("neocascade")

INPUT_ERROR_EXIT = 2  # exit status for bad input (a config key, a file); 1 stays for crashes


class report_input_errors(contextlib.ContextDecorator):
    """Turn bad input into one ``error: ...`` line on stderr and exit status 2.

    Bad input is an :class:`InputError` (also when Hydra's ``instantiate`` wrapped it), a
    ``ValueError``/``TypeError`` raised while building an object from a config node (named by its
    key), or an OmegaConf error (a missing or misspelt key). Use as a decorator on a pipeline's
    ``run`` or as ``with report_input_errors():``. Other exceptions keep their traceback: they are bugs.
    """

    def __enter__(self) -> "report_input_errors":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        message = None if exc is None else input_error_message(exc)
        if message is None:
            return False
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        raise SystemExit(INPUT_ERROR_EXIT) from None


def input_error_message(exc: BaseException) -> str | None:
    """The one-line message for ``exc`` when it is bad input (see :class:`report_input_errors`), else None."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    chain, seen = exc, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, InputError):
            return _first_line(chain) or type(chain).__name__
        chain = chain.__cause__ or chain.__context__
    if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, (ValueError, TypeError)):
        # Hydra ends its message with "full_key: data.selector" naming the node being built
        keys = [line[len("full_key: "):] for line in str(exc).splitlines() if line.startswith("full_key: ")]
        return f"{keys[-1] if keys else 'config'}: {_first_line(exc.__cause__)}"
    if isinstance(exc, OmegaConfBaseException):
        return f"config: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# ---------------------------------------------------------------------------------------------- run folders
_UNIQUE_DIRS: dict[str, str] = {}  # requested folder -> the one this process created for it


def unique_dir(path: str) -> str:
    """Create a new folder for this run: ``path``, or ``path-2``, ``path-3``, ... when taken; return its name.

    ``os.mkdir`` either creates a folder or fails because it exists, so two runs started in the
    same second (same timestamped name) never share a folder. The answer is remembered per
    process: the resolver is asked again for the same name (Hydra copies configs) and must give
    the same folder. A folder that cannot be created at all (read-only, a parent is a file) returns
    ``path`` unchanged; :class:`OutputDirCheck` then reports it as one line.
    """
    key = str(path)
    if key in _UNIQUE_DIRS:
        return _UNIQUE_DIRS[key]
    base = Path(key)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return key
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError:
            return key
        _UNIQUE_DIRS[key] = str(candidate)
        return str(candidate)
    return key


if not OmegaConf.has_resolver("unique_dir"):
    # use_cache: Hydra copies the resolved value into each sweep job's config (like ${now:...})
    OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)


class OutputDirCheck(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): an unwritable run or sweep folder is one line and exit 2.

    Runs before Hydra creates the folder and opens its log there, so a read-only ``outputs/``, a
    run folder that is a file, or a parent that is a file never ends in Hydra's traceback.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with report_input_errors():
            check_output_dir(str(config.hydra.run.dir), key="hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with report_input_errors():
            check_output_dir(str(config.hydra.sweep.dir), key="hydra.sweep.dir")


@dataclass
class JobInfo:
    """Where a run writes and how Hydra launched it."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    override_dirname: str = ""
    job_num: int | None = None
    sweep_dir: Path | None = None

    @property
    def group(self) -> str | None:
        """The sweep's name (its folder), shared by all jobs of one multirun; None for a single run."""
        return None if self.sweep_dir is None else self.sweep_dir.name

    @property
    def name(self) -> str:
        """Run name: the overrides that make this job differ (``data.kernel=30,data.sigma=1``), or the folder."""
        return self.override_dirname or self.run_dir.name


def job_info(run_dir: str | os.PathLike | None = None) -> JobInfo:
    """Facts about the current Hydra job; ``run_dir`` given (tests, the compose API) wins over Hydra's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        path = Path(run_dir) if run_dir is not None else Path.cwd()
        return JobInfo(run_dir=path)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobInfo(
        run_dir=Path(run_dir) if run_dir is not None else Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        override_dirname=str(hc.job.override_dirname),
        job_num=int(hc.job.num) if multirun else None,
        sweep_dir=Path(hc.sweep.dir) if multirun else None,
    )


def is_rank_zero() -> bool:
    """True on the process that writes files (global rank 0), also before any Trainer exists."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    """Write the resolved config as ``config.yaml`` in the run folder (atomically, rank 0 only)."""
    path = run_dir / "config.yaml"
    if is_rank_zero():
        save_text(path, OmegaConf.to_yaml(cfg, resolve=True), overwrite=True)
    return path


# ---------------------------------------------------------------------------------------------- generated files
def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` set to ``body``.

    Lets two generators share one Markdown file: each rewrites its own marked section only. A missing
    section is appended.
    """
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        return text[:i] + block + text[j + len(end):]
    return (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"


def write_section(results: str | None, name: str, body: str, *, cwd: str | Path) -> Path | None:
    """Set section ``name`` of the Markdown file ``cwd / results`` to ``body`` (the file is created when missing).

    Returns the file, or None when ``results`` is empty (the runner writes no table).
    """
    if not results:
        return None
    path = Path(cwd) / results
    text = path.read_text() if path.is_file() else ""
    save_text(path, replace_section(text, name, body), overwrite=True)
    return path


def marked_sections(text: str) -> dict[str, str]:
    """Every ``<!-- name:start -->`` ... ``<!-- name:end -->`` section of ``text``: name -> body."""
    import re

    found = re.finditer(r"<!-- ([\w.-]+):start -->\n(.*?)\n<!-- \1:end -->", text, flags=re.S)
    return {m.group(1): m.group(2) for m in found}
