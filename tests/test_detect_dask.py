"""detect.py at scale: Dask clusters, Parquet catalogues, resuming after SIGKILL, exit codes, output folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from neocascade.detection.catalogue import (
    CATALOGUE_COLUMNS, PROVENANCE_COLUMNS, from_arrow, partition_name, read_parquet_catalogue, to_arrow,
    write_parquet_catalogue,
)
from neocascade.errors import InputError
from neocascade.pipelines.cluster import LocalDask, Serial, SlurmDask, usable_cores
from neocascade.pipelines.detect import STATE_DIR, detect, run
from test_detect_pipeline import REPO, config, positions, rows_of, tiny_artifact, write_npz
from test_detection import blob_image

N_FILES = 40  # the "40-quadrant run", as 64x64 images
THREADS = ("cluster=local", "cluster.processes=false", "cluster.n_workers=2", "cluster.torch_threads=null")


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """40 one-image npz files, a real (tiny) artifact, and the catalogue of an uninterrupted serial run."""
    root = tmp_path_factory.mktemp("night")
    artifact = tiny_artifact(root / "cascade.pt", threshold=0.4)
    folder = root / "quadrants"
    folder.mkdir()
    for k in range(N_FILES):
        image = blob_image(shape=(64, 64), sources=((20 + k % 20, 30),), seed=k)
        write_npz(folder / f"images_{k:02d}.npz", image[None])
    reference = root / "reference"
    assert detect(config(root, f"input={folder}", f"artifact={artifact}", f"out={reference}", "max_overlays=0")) == 0
    return {"root": root, "artifact": artifact, "input": folder, "catalogue": (reference / "catalogue.csv").read_text()}


def start_detect(tmp_path: Path, night: dict, out: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "detect.py"), f"input={night['input']}", f"artifact={night['artifact']}",
         f"out={out}", "max_overlays=40", "progress=false", "hydra.run.dir=hydra_run", "residual_check=none",
         *overrides],  # the settings of test_detect_pipeline.config, which the reruns compare against
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_manifest(out: Path, proc: subprocess.Popen, *, lines: int, timeout: float = 90.0) -> int:
    """Wait until the run's manifest lists ``lines`` finished files; return how many it lists."""
    manifest = out / STATE_DIR / "manifest.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        done = len(manifest.read_text().splitlines()) if manifest.is_file() else 0
        if done >= lines:
            return done
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {lines} finished files within {timeout} s: {proc.communicate()[1][-2000:]}")


def test_cluster_configs_compose_and_build(tmp_path):
    assert isinstance(instantiate(config(tmp_path, "cluster=none").cluster), Serial)
    local = instantiate(config(tmp_path, "cluster=local").cluster)
    assert isinstance(local, LocalDask)
    assert (local.n_workers, local.threads_per_worker, local.torch_threads) == (usable_cores(), 1, 1)
    slurm = instantiate(config(tmp_path, "cluster=slurm", "cluster.jobs=3", "cluster.options.queue=batch",
                               "cluster.options.cores=4", "cluster.options.processes=4").cluster)
    assert isinstance(slurm, SlurmDask) and slurm.jobs == 3
    cluster = slurm.build()  # constructing submits nothing; scale() would
    try:
        script = cluster.job_script()
        assert "#SBATCH -p batch" in script and "#SBATCH --cpus-per-task=4" in script
        assert "--nworkers 4" in script and "--nthreads 1" in script
        assert len(cluster.workers) == 0
    finally:
        cluster.close()
    with pytest.raises(InstantiationException, match="cluster.n_workers: must be an integer >= 1"):
        instantiate(config(tmp_path, "cluster=local", "cluster.n_workers=0").cluster)


def test_address_cluster_needs_a_scheduler(tmp_path, fake_cascade, capsys):
    data = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    for extra, message in ((), "cluster.address"), (("cluster.address=tcp://127.0.0.1:9", "cluster.timeout=1"),
                                                    "cluster.address: no Dask scheduler answers at"):
        with pytest.raises(SystemExit) as exit_info:
            run(config(tmp_path, f"input=[{data},{data}]", "artifact=x.pt", f"out={tmp_path / 'o'}", "overwrite=true",
                       "cluster=address", *extra))
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and message in err[0], err


def test_dask_threads_give_the_serial_catalogue_and_one_line_per_bad_file(tmp_path, fake_cascade, capsys):
    for k, folder in enumerate(("a", "a", "b", "b", "b")):
        (tmp_path / folder).mkdir(exist_ok=True)
        write_npz(tmp_path / folder / f"images_{k}.npz", blob_image(sources=((10 + 9 * k, 40),), seed=k)[None])
    bad = write_npz(tmp_path / "b" / "images_9.npz", np.full((1, 64, 64), np.nan, np.float32))
    inputs = f"input=[{tmp_path / 'a'},{tmp_path / 'b'}]"
    assert detect(config(tmp_path, inputs, "artifact=x.pt", f"out={tmp_path / 'serial'}")) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {bad}[image 0]: image: every pixel is NaN or "
                                                            "infinite (fully masked)"]
    assert detect(config(tmp_path, inputs, "artifact=x.pt", f"out={tmp_path / 'dask'}", *THREADS)) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    serial = (tmp_path / "serial" / "catalogue.csv").read_text()
    assert (tmp_path / "dask" / "catalogue.csv").read_text() == serial
    assert len(rows_of(tmp_path / "serial")) == 5
    summary = json.loads((tmp_path / "dask" / "summary.json").read_text())
    assert summary["cluster"].startswith("LocalDask(n_workers=2") and summary["images"] == 5
    assert not (tmp_path / "dask" / STATE_DIR).exists()


def test_parquet_catalogue_partitioned_with_provenance(tmp_path):
    artifact = tiny_artifact(tmp_path / "cascade.pt", threshold=0.4)
    for folder in ("night1", "night2"):
        (tmp_path / folder).mkdir()
        write_npz(tmp_path / folder / "images_0.npz", blob_image(shape=(32, 32), sources=((8, 8),))[None])
    inputs = f"input=[{tmp_path / 'night1'},{tmp_path / 'night2'}]"
    common = (inputs, f"artifact={artifact}", "merge_radius=0", "cluster=none")
    assert detect(config(tmp_path, *common, f"out={tmp_path / 'csv'}")) == 0
    assert detect(config(tmp_path, *common, f"out={tmp_path / 'pq'}", "format=parquet")) == 0
    folder = tmp_path / "pq" / "catalogue"
    assert sorted(p.name for p in folder.iterdir()) == ["folder=night1", "folder=night2"]
    table = read_parquet_catalogue(folder)
    assert table.column_names == [*CATALOGUE_COLUMNS, *PROVENANCE_COLUMNS, "folder"]
    summary = json.loads((tmp_path / "pq" / "summary.json").read_text())
    import hashlib

    assert set(table.column("artifact_sha256").to_pylist()) == {hashlib.sha256(artifact.read_bytes()).hexdigest()}
    assert set(table.column("config_hash").to_pylist()) == {summary["config_hash"]}
    csv_rows = rows_of(tmp_path / "csv")
    assert len(csv_rows) == table.num_rows == 8
    got = from_arrow(table)
    assert [(str(f), int(i), float(x)) for f, i, x in zip(got["file"], got["image"], got["x"])] == \
        [(r["file"], int(r["image"]), float(r["x"])) for r in csv_rows]
    assert detect(config(tmp_path, *common, f"out={tmp_path / 'flat'}", "format=parquet", "partition_by=none")) == 0
    assert (tmp_path / "flat" / "catalogue" / "part-0.parquet").is_file()


def test_parquet_partitions_by_night_and_field(tmp_path, fake_cascade):
    from astropy.io import fits

    from neocascade.io.alerts import write_test_alert
    from neocascade.io.npz import write_canonical

    images = np.stack([blob_image(sources=((20, 40),)), blob_image(sources=((30, 30),), seed=2)])
    write_canonical(tmp_path / "a.npz", images, np.empty((0, 6)), {}, obs_mjd=np.array([60310.2, 60310.3]),
                    field=np.array([517, 517]))
    header = fits.Header({"OBSMJD": 60311.25, "FIELDID": 600})
    fits.PrimaryHDU(blob_image(sources=((16, 32),)), header=header).writeto(tmp_path / "b.fits")
    write_test_alert(tmp_path / "c.avro", difference=blob_image(shape=(63, 63), sources=((31, 31),)), candid=5,
                     jd=2460311.5 + 0.25, field=700)
    write_npz(tmp_path / "d.npz", blob_image(sources=((12, 12),))[None])  # says neither
    expected = {"night": ["2024-01-01", "2024-01-02", "2024-01-02", "unknown"],
                "field": ["517", "600", "700", "unknown"]}
    for by, values in expected.items():
        out = tmp_path / by
        assert detect(config(tmp_path, f"input={tmp_path}", "artifact=x.pt", f"out={out}", "format=parquet",
                             f"partition_by={by}")) == 0
        table = read_parquet_catalogue(out / "catalogue")
        files = {Path(f).name: str(v) for f, v in zip(table.column("file").to_pylist(), table.column(by).to_pylist())}
        assert [files[name] for name in ("a.npz", "b.fits", "c.avro", "d.npz")] == values
        assert len({p.name for p in (out / "catalogue").iterdir()}) == len(set(values))


def test_arrow_round_trip_and_partition_names(tmp_path):
    columns = {"file": np.array(["a.npz", "b.npz"], dtype=object), "image": np.array([0, 12345678901234], dtype=object),
               "x": np.array([1.5, 2.0]), "y": np.array([3.0, 4.0]), "ra": np.array([np.nan, 10.0]),
               "dec": np.array([np.nan, -1.0]), "p1": np.array([0.9, 0.8]), "p2": np.array([np.nan, 0.7]),
               "peak": np.array([30.0, 40.0]), "snr": np.array([5.0, 6.0]), "detected": np.array([True, False])}
    back = from_arrow(to_arrow(columns))
    assert tuple(back) == CATALOGUE_COLUMNS
    for name in columns:
        np.testing.assert_array_equal(back[name], columns[name])
    assert partition_name("ztf_20200101/../x y") == "ztf_20200101_.._x_y" and partition_name("..") == "unknown"
    write_parquet_catalogue(tmp_path / "cat", {"a": columns}, by="folder", provenance={"config_hash": "h"})
    with pytest.raises(InputError, match="already exists; pass overwrite=true"):
        write_parquet_catalogue(tmp_path / "cat", {"a": columns}, by="folder", provenance={})


def test_alert_folders_through_dask_drop_repeated_packets(tmp_path, fake_cascade):
    from neocascade.io.alerts import write_test_alert

    stamp = blob_image(shape=(63, 63), sources=((31, 31),))
    for folder, candids in (("ztf_public_1", (1, 2)), ("ztf_public_2", (2, 3))):  # candid 2 distributed twice
        (tmp_path / folder).mkdir()
        for candid in candids:
            write_test_alert(tmp_path / folder / f"{candid}.avro", difference=stamp, candid=candid)
    inputs = f"input=[{tmp_path / 'ztf_public_1'},{tmp_path / 'ztf_public_2'}]"
    assert detect(config(tmp_path, inputs, "artifact=x.pt", f"out={tmp_path / 'o'}", "format=parquet", *THREADS)) == 0
    table = read_parquet_catalogue(tmp_path / "o" / "catalogue")
    rows = sorted(zip(table.column("folder").to_pylist(), table.column("image").to_pylist()))
    assert rows == [("ztf_public_1", 1), ("ztf_public_1", 2), ("ztf_public_2", 3)]
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["alerts"] == 3


def test_exit_status_none_some_every_input_bad(tmp_path, fake_cascade, capsys):
    good = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    bad = [write_npz(tmp_path / f"images_{k}.npz", np.full((1, 64, 64), np.nan, np.float32)) for k in (1, 2)]
    assert detect(config(tmp_path, f"input={good}", "artifact=x.pt", f"out={tmp_path / 'none'}")) == 0
    assert detect(config(tmp_path, f"input=[{good},{bad[0]}]", "artifact=x.pt", f"out={tmp_path / 'some'}")) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input=[{bad[0]},{bad[1]}]", "artifact=x.pt", f"out={tmp_path / 'all'}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and [line.split("[")[0] for line in err] == [f"error: {p}" for p in bad]
    assert rows_of(tmp_path / "all") == []


def test_one_file_named_twice_is_read_once(tmp_path, fake_cascade):
    data = write_npz(tmp_path / "images_0.npz", blob_image(sources=((20, 40),))[None])
    other_name = tmp_path / "sub" / ".." / "images_0.npz"
    (tmp_path / "sub").mkdir()
    assert detect(config(tmp_path, f"input=[{data},{other_name}]", "artifact=x.pt", f"out={tmp_path / 'o'}")) == 0
    assert positions(rows_of(tmp_path / "o")) == [("0", 40.0, 20.0)]


@pytest.mark.parametrize("case", ["file", "parent_file", "read_only"])
def test_unusable_out_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, case):
    import neocascade.training.artifact as artifact

    if case == "read_only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    monkeypatch.setattr(artifact, "load_cascade", lambda *a, **k: pytest.fail("work started before out= was checked"))
    data = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    (tmp_path / "a_file").write_text("user data")
    out = {"file": tmp_path / "a_file", "parent_file": tmp_path / "a_file" / "det",
           "read_only": tmp_path / "ro" / "det"}
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out[case]}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: out: "), err
    assert (tmp_path / "a_file").read_text() == "user data"


def test_unfinished_run_with_other_settings_is_refused(tmp_path, fake_cascade, capsys):
    data = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    state = tmp_path / "det" / STATE_DIR
    state.mkdir(parents=True)
    (state / "settings.json").write_text(json.dumps({"config_hash": "0123456789abcdef"}))
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={tmp_path / 'det'}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "unfinished run with other settings" in err[0]
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={tmp_path / 'det'}", "overwrite=true")) == 0
    assert not state.exists()


class LosingCluster:
    """A cluster whose first item keeps killing its workers (as a KilledWorker would report)."""

    torch_threads = None

    def map(self, fn, items, *, on_result, on_lost=None):
        items = list(items)
        on_lost(items[0], RuntimeError("Attempted to run task on 4 different workers, all died"))
        for item in items[1:]:
            on_result(fn(*item))


def test_input_that_kills_its_workers_is_skipped_not_the_run(tmp_path, fake_cascade, capsys):
    files = [write_npz(tmp_path / f"images_{k}.npz", blob_image(sources=((20, 40),), seed=k)[None]) for k in range(3)]
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={tmp_path}", "artifact=x.pt", f"out={out}",
                         "cluster._target_=test_detect_dask.LosingCluster")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {files[0]}: skipped, it took down every worker"), err
    assert sorted({r["file"] for r in rows_of(out)}) == [str(p) for p in files[1:]]


def test_dask_hands_a_killed_workers_item_to_on_lost(tmp_path):
    import dask

    lost, results = [], []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalDask(n_workers=1, dashboard_address=None, min_inputs=0, retries=0, torch_threads=None)
        cluster.map(os._exit, [(3,)], on_result=results.append, on_lost=lambda item, exc: lost.append((item, exc)))
    assert results == [] and len(lost) == 1 and lost[0][0] == (3,)
    assert type(lost[0][1]).__name__ == "KilledWorker"


def test_manifest_keeps_only_whole_entries_with_their_part(tmp_path):
    from neocascade.pipelines.detect import RunFolder, part_name

    folder = RunFolder(tmp_path / "det", fmt="csv", config_hash="h")
    assert folder.prepare(overwrite=False, settings={}) == {}
    entry = {"file": "a.npz", "part": part_name("a.npz"), "kind": "npz", "partition": "x", "images": 1, "alerts": 0,
             "detections": 2, "overlays": 0, "units_ok": 1, "failed": []}
    (folder.state / "parts" / entry["part"]).write_bytes(b"")
    without_part = {**entry, "file": "b.npz", "part": part_name("b.npz")}
    escaping = {**entry, "part": "../../settings.json"}
    folder.record(entry)
    folder.record(without_part)
    folder.record(escaping)
    with open(folder.manifest, "a") as handle:
        handle.write('{"file": "c.npz", "part": ')  # torn by a SIGKILL
    assert folder.prepare(overwrite=False, settings={}) == {entry["part"]: entry}


def test_second_run_into_a_busy_folder_is_refused(tmp_path, fake_cascade, capsys):
    import fcntl

    data = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    out = tmp_path / "det"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running detect.py holds it
        with pytest.raises(SystemExit) as exit_info:
            run(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}"))
    finally:
        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == [f"error: {out}: another detect.py run is writing into this folder"]
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}")) == 0


@pytest.mark.slow
def test_rerun_after_sigkill_resumes_cleans_up_and_matches(tmp_path, night, capsys):
    out = tmp_path / "det"
    proc = start_detect(tmp_path, night, out, "cluster=none")
    done = wait_for_manifest(out, proc, lines=5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert done < N_FILES and not (out / "catalogue.csv").exists()
    # what a writer killed mid-file leaves: a temporary catalogue and overlay
    (out / ".catalogue.csv.k1ll3d.tmp").write_text("")
    (out / "overlays" / ".images_39_0.png.k1ll3d.tmp").write_bytes(b"")
    rerun = config(night["root"], f"input={night['input']}", f"artifact={night['artifact']}", f"out={out}",
                   "max_overlays=40")
    assert run(rerun) == 0
    assert (out / "catalogue.csv").read_text() == night["catalogue"]
    assert sorted(p.name for p in out.rglob("*") if p.name.endswith(".tmp")) == []
    assert not (out / STATE_DIR).exists() and len(list((out / "overlays").glob("*.png"))) == N_FILES
    assert json.loads((out / "summary.json").read_text())["resumed_files"] >= 5
    with pytest.raises(SystemExit) as exit_info:  # a finished run is not redone
        run(rerun)
    assert exit_info.value.code == 2 and "catalogue.csv: already exists" in capsys.readouterr().err
    fewer = config(night["root"], f"input={night['input']}", f"artifact={night['artifact']}", f"out={out}",
                   "max_overlays=3", "overwrite=true")
    assert run(fewer) == 0  # the earlier overlays go with the earlier catalogue
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"images_{k:02d}_0.png" for k in range(3)]


@pytest.mark.slow
def test_sigkilled_dask_worker_costs_nothing(tmp_path, night):
    import psutil

    out = tmp_path / "det"
    proc = start_detect(tmp_path, night, out, "cluster=local", "cluster.n_workers=2")
    done = wait_for_manifest(out, proc, lines=3)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if any("spawn_main" in part for part in p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in workers]
    workers[0].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert done < N_FILES
    assert (out / "catalogue.csv").read_text() == night["catalogue"]
    assert positions(rows_of(out))[0][0] == "0"
    assert not (out / STATE_DIR).exists() and sorted(p.name for p in out.rglob("*.tmp")) == []


def test_partition_values_naming_one_folder_keep_every_row(tmp_path):
    """Folders 'a b' and 'a_b' name the same partition folder: their rows share it, none is lost."""
    artifact = tiny_artifact(tmp_path / "cascade.pt", threshold=0.4)
    for folder in ("a b", "a_b"):
        (tmp_path / folder).mkdir()
        write_npz(tmp_path / folder / "images_0.npz", blob_image(shape=(32, 32), sources=((8, 8),))[None])
    common = (f"input=['{tmp_path / 'a b'}','{tmp_path / 'a_b'}']", f"artifact={artifact}", "merge_radius=0",
              "cluster=none")
    assert detect(config(tmp_path, *common, f"out={tmp_path / 'csv'}")) == 0
    assert detect(config(tmp_path, *common, f"out={tmp_path / 'pq'}", "format=parquet")) == 0
    assert sorted(p.name for p in (tmp_path / "pq" / "catalogue").iterdir()) == ["folder=a_b"]
    assert read_parquet_catalogue(tmp_path / "pq" / "catalogue").num_rows == len(rows_of(tmp_path / "csv")) == 8
