"""The Spark-free core: one image -> rows exactly as SExtractor itself prints them."""
from __future__ import annotations

import bz2
import concurrent.futures
import gzip
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from conftest import REAL, direct_run, parse_ascii_head, printed_tolerance, real_images
from sexstream import extractor, settings, workdirs
from sexstream.params import UnknownKeyError

DOUBLES = Path(__file__).parent / "doubles"
SEP_KEYS = ["NUMBER", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE", "X2_IMAGE", "Y2_IMAGE",
            "XY_IMAGE", "ERRX2_IMAGE", "ERRY2_IMAGE", "ERRXY_IMAGE", "A_IMAGE", "FLUX_APER(1)",
            "FLUXERR_APER(1)", "KRON_RADIUS", "FLUX_AUTO", "FLUXERR_AUTO", "FLUX_RADIUS(3)", "FLAGS"]
SEED_KEYS = ["NUMBER", "EXT_NUMBER", "FLUX_ISO", "MAG_ISO", "ALPHA_SKY", "DELTA_SKY",
             "FLUXERR_ISO", "MAGERR_ISO", "X_IMAGE", "Y_IMAGE", "FLAGS", "FLUX_APER(2)"]


def flat_row(row: dict, keys: list[str]) -> list[float]:
    """A sources row as the flat list of numbers SExtractor prints, vectors expanded."""
    out = []
    for k in keys:
        v = row[k.split("(")[0]]
        out += [float(x) for x in v] if isinstance(v, list) else [float(v)]
    return out


def assert_rows_equal_printed(table: pa.Table, keys: list[str], names: list[str],
                              rows: list[list[str]], skip: set[tuple[int, str]] = frozenset()) -> None:
    ours = table.to_pylist()
    assert len(ours) == len(rows)
    for i, (mine, printed) in enumerate(zip(ours, rows), start=1):
        values = flat_row(mine, keys)
        assert len(values) == len(printed) == len(names)
        for name, v, token in zip(names, values, printed):
            if (i, name) in skip:
                continue
            assert math.isclose(v, float(token), rel_tol=0, abs_tol=printed_tolerance(token)), (
                f"row {i} {name}: ours {v!r}, SExtractor printed {token}")


@pytest.fixture(scope="module")
def sep_plan(real_dir):
    sep = real_dir / "sep"
    return extractor.prepare(settings.load(keys=tuple(SEP_KEYS), fitskeys=(),
                                           config=str(sep / "default.sex")))


def test_sep_oracle_every_row_and_column_equals_a_direct_run(real_dir, sep_plan, tmp_path):
    sep = real_dir / "sep"
    result = extractor.extract(sep / "image.fits", sep_plan)
    assert result.record["status"] == "ok", result.record["reason"]
    assert result.record["n_sources"] == 65
    t = result.sources
    assert t.schema.field("NUMBER").type == pa.int32()
    assert t.schema.field("FLAGS").type == pa.int16()
    assert t.schema.field("FLUX_RADIUS").type == pa.list_(pa.float32())
    assert all(len(v) == 3 for v in t["FLUX_RADIUS"].to_pylist())
    names, rows = direct_run(sep / "image.fits", SEP_KEYS, tmp_path, config=sep / "default.sex")
    assert_rows_equal_printed(t, SEP_KEYS, names, rows)


def test_sep_oracle_matches_image_cat_but_xwin_on_rows_18_and_31(real_dir, sep_plan):
    sep = real_dir / "sep"
    t = extractor.extract(sep / "image.fits", sep_plan).sources
    names, rows = parse_ascii_head((sep / "image.cat").read_text())
    differs = {(r, c) for r in (18, 31) for c in ("XWIN_IMAGE", "YWIN_IMAGE")}
    assert_rows_equal_printed(t, SEP_KEYS, names, rows, skip=differs)
    # SExtractor 2.25 prints XWIN/YWIN equal to X/Y there; image.cat (older) does not.
    got = {r: (round(t["XWIN_IMAGE"][r - 1].as_py(), 4), round(t["YWIN_IMAGE"][r - 1].as_py(), 4))
           for r in (18, 31)}
    assert got == {18: (77.2926, 186.9532), 31: (89.0675, 143.7518)}
    cat = {int(row[0]): (float(row[3]), float(row[4])) for row in rows}
    assert cat[18] == (82.5216, 184.5483) and cat[31] == (84.4797, 142.1559)


def _plain_copy(image: Path, tmp_path: Path) -> Path:
    """The uncompressed bytes of `image` (gzip, bzip2 or tile-compressed) for a direct run."""
    out = tmp_path / "plain.fits"
    head = image.read_bytes()[:3]
    if head[:2] == b"\x1f\x8b":
        out.write_bytes(gzip.decompress(image.read_bytes()))
    elif head == b"BZh":
        out.write_bytes(bz2.decompress(image.read_bytes()))
    else:
        with fits.open(image) as hdul:
            if not any(isinstance(h, fits.CompImageHDU) for h in hdul):
                return image
            fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)] +
                         [fits.ImageHDU(h.data, h.header) for h in hdul[1:]]).writeto(out)
    return out


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")
@pytest.mark.parametrize("image", real_images(), ids=lambda p: p.name)
def test_every_real_image_equals_a_direct_run_with_packaged_defaults(image, tmp_path):
    plan = extractor.prepare(settings.load(keys=tuple(SEED_KEYS), fitskeys=("FILTER",)))
    result = extractor.extract(image, plan)
    assert result.record["status"] == "ok", result.record["reason"]
    names, rows = direct_run(_plain_copy(image, tmp_path), SEED_KEYS, tmp_path / "direct",
                             extra=["-PHOT_APERTURES", "5"])
    assert rows, "the direct run found nothing: the comparison would be empty"
    assert_rows_equal_printed(result.sources, SEED_KEYS, names, rows)
    assert result.record["n_sources"] == len(rows)


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(UnknownKeyError, match=r"'FLUX_APPER'.*did you mean FLUX_APER"):
        extractor.prepare(settings.load(keys=("NUMBER", "FLUX_APPER(3)")))
    with pytest.raises(ValueError, match="DETECT_THRESH"):
        extractor.prepare(settings.load(overrides=(("DETECT_TRESH", "3"),)))
    with pytest.raises(ValueError, match="CATALOG_NAME is set by sexstream"):
        extractor.prepare(settings.load(overrides=(("CATALOG_NAME", "x.cat"),)))


def test_vector_keys_become_list_columns_of_their_size(real_dir):
    plan = extractor.prepare(settings.load(
        keys=("NUMBER", "FLUX_APER(3)", "VIGNET(5,4)", "FLUX_RADIUS"), fitskeys=(),
        overrides=(("PHOT_APERTURES", "3,6,9"),)))
    t = extractor.extract(real_dir / "sep" / "image.fits", plan).sources
    assert t.schema.field("FLUX_APER").type == pa.list_(pa.float32())
    assert t.schema.field("VIGNET").type == pa.list_(pa.list_(pa.float32()))
    assert t.schema.field("FLUX_RADIUS").type == pa.list_(pa.float32())  # vector without size: 1
    row = t.to_pylist()[0]
    assert len(row["FLUX_APER"]) == 3 and row["FLUX_APER"][0] < row["FLUX_APER"][2]
    assert [len(r) for r in row["VIGNET"]] == [5, 5, 5, 5]
    assert len(row["FLUX_RADIUS"]) == 1


def _mef(tmp_path: Path, real_dir: Path) -> Path:
    data = fits.getdata(real_dir / "sep" / "image.fits").astype(np.float32)
    prim = fits.PrimaryHDU()
    prim.header.update({"FILTER": "primary-r", "RUNID": "26BQ01", "EXPTIME": 30.0, "NIGHT": 7,
                        "PHOTOM": True})
    e1 = fits.ImageHDU(data, name="CCD1")
    e1.header.update({"FILTER": "ext1-g", "EXPTIME": 31})
    e2 = fits.ImageHDU(data[::-1].copy(), name="CCD2")
    path = tmp_path / "mef.fits"
    fits.HDUList([prim, e1, e2]).writeto(path)
    return path


def test_mef_measures_every_extension_with_header_precedence_and_types(tmp_path, real_dir):
    path = _mef(tmp_path, real_dir)
    plan = extractor.prepare(settings.load(
        keys=("NUMBER", "EXT_NUMBER", "FLUX_ISO"),
        fitskeys=("FILTER", "RUNID", "EXPTIME", "NIGHT", "PHOTOM", "MISSING")))
    r = extractor.extract(path, plan)
    assert r.record["status"] == "ok" and r.record["n_extensions"] == 2
    t = r.sources.to_pandas()
    assert set(t["EXT_NUMBER"]) == {1, 2}
    single = extractor.extract(real_dir / "sep" / "image.fits", plan).record["n_sources"]
    assert (t["EXT_NUMBER"] == 1).sum() == single > 50  # the same pixels as the plain file
    assert (t["EXT_NUMBER"] == 2).sum() > 50
    assert set(t.loc[t.EXT_NUMBER == 1, "FILTER"]) == {"ext1-g"}
    assert set(t.loc[t.EXT_NUMBER == 2, "FILTER"]) == {"primary-r"}
    assert set(t["RUNID"]) == {"26BQ01"}
    schema = r.sources.schema
    assert schema.field("EXPTIME").type == pa.float64()  # int 31 on ext1, 30.0 on primary
    assert schema.field("NIGHT").type == pa.int64()
    assert schema.field("PHOTOM").type == pa.bool_()
    assert r.sources["MISSING"].null_count == r.sources.num_rows
    assert [fp["hdu"] for fp in r.record["footprints"]] == [1, 2]
    assert r.record["FILTER"] == "primary-r" and r.record["NIGHT"] == 7


def test_compressed_inputs_give_the_rows_of_the_plain_file(tmp_path, real_dir):
    plain = real_dir / "sewpy" / "euler_ngc2024.fits"
    bz = tmp_path / "euler.fits.bz2"
    bz.write_bytes(bz2.compress(plain.read_bytes()))
    rice = tmp_path / "euler_rice.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(fits.getdata(plain), fits.getheader(plain),
                                                       compression_type="GZIP_1",
                                                       quantize_level=0.0)]).writeto(rice)
    plan = extractor.prepare(settings.load(keys=("NUMBER", "FLUX_AUTO", "X_IMAGE"), fitskeys=()))
    want = extractor.extract(plain, plan).sources.select(["NUMBER", "FLUX_AUTO", "X_IMAGE"])
    assert want.num_rows > 10
    for f in (real_dir / "sewpy" / "euler_ngc2024.fits.gz", bz, rice):
        r = extractor.extract(f, plan)
        assert r.record["status"] == "ok", (f, r.record["reason"])
        assert r.sources.select(["NUMBER", "FLUX_AUTO", "X_IMAGE"]).equals(want), f
    tile = extractor.extract(real_dir / "legacypipe" / "c4d_171113_060340_ooi_r_ls9.N6.fits", plan)
    assert tile.record["status"] == "ok" and tile.record["n_sources"] > 0


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_timeout_kills_the_whole_process_group(tmp_path, real_dir):
    pidfile = tmp_path / "pids"
    os.environ["SEXSTREAM_DOUBLE_PIDFILE"] = str(pidfile)
    try:
        plan = extractor.prepare(settings.load(binary=str(DOUBLES / "sextractor_hang"),
                                               timeout=1.5, retries=0))
        t0 = time.monotonic()
        r = extractor.extract(real_dir / "sep" / "image.fits", plan)
        elapsed = time.monotonic() - t0
    finally:
        del os.environ["SEXSTREAM_DOUBLE_PIDFILE"]
    assert r.record["status"] == "failed"
    assert r.record["reason"] == "SExtractor timed out after 1.5 s"
    assert elapsed < 30
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2  # the double and the child it forked
    time.sleep(0.2)
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived the timeout"


KILLED_WORKER = """
import sys
from sexstream import extractor, settings, workdirs
plan = extractor.prepare(settings.load(binary=sys.argv[1], timeout=600, retries=0))
extractor.extract(sys.argv[2], plan)
"""


def test_a_killed_worker_takes_its_sextractor_with_it(tmp_path, real_dir):
    """kill -9 of the process running SExtractor (a Spark worker, when the driver or an
    executor dies) ends SExtractor too, though it runs in a session of its own."""
    pidfile = tmp_path / "pids"
    worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(DOUBLES / "sextractor_hang"),
                               str(real_dir / "sep" / "image.fits")],
                              env={**os.environ, "SEXSTREAM_DOUBLE_PIDFILE": str(pidfile)})
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and len(pidfile.read_text().split()) == 2) and time.monotonic() < deadline:
            assert worker.poll() is None
            time.sleep(0.05)
        double, grandchild = (int(p) for p in pidfile.read_text().split())
        assert alive(double)
        worker.kill()
        worker.wait(30)
        deadline = time.monotonic() + 30
        while alive(double) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(double), "SExtractor outlived the worker that ran it"
    finally:
        worker.kill()
        for pid in (int(p) for p in pidfile.read_text().split()) if pidfile.exists() else ():
            try:
                os.kill(pid, signal.SIGKILL)  # the double's own child: not SExtractor's behaviour
            except ProcessLookupError:
                pass


def test_work_dirs_left_by_dead_processes_are_swept(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = time.time() - 3600
    dead_old = tmp_path / f"sexstream-{gone}-abc"
    dead_young = tmp_path / f"sexstream-{gone}-young"
    live_old = tmp_path / f"sexstream-{os.getppid()}-xyz"
    others = [tmp_path / "sexstream-spark-123", tmp_path / "sexstream-ship-9"]
    for d in (dead_old, dead_young, live_old, *others):
        d.mkdir()
        (d / "catalog.param").write_text("NUMBER\n")
    for d in (dead_old, live_old, *others):
        os.utime(d, (old, old))
    removed = workdirs.sweep(str(tmp_path), older_than=600)
    assert removed == [str(dead_old)]
    assert not dead_old.exists() and dead_young.exists() and live_old.exists()
    assert all(d.exists() for d in others)


def test_twenty_parallel_tasks_in_one_process_each_get_their_own_rows(real_dir):
    images = [p for p in real_images() if p.suffix == ".fits"][:10] * 2
    assert len(images) == 20
    plan = extractor.prepare(settings.load(keys=("NUMBER", "FLUX_ISO", "X_IMAGE"), fitskeys=()))
    expected = {p: extractor.extract(p, plan).sources.drop_columns(["image_id"]) for p in set(images)}
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda p: extractor.extract(p, plan), images))
    for p, r in zip(images, results):
        assert r.record["status"] == "ok"
        assert r.sources.drop_columns(["image_id"]).equals(expected[p]), p


def test_bad_input_is_a_record_not_an_exception(tmp_path, real_dir):
    plan = extractor.prepare(settings.load())
    text = tmp_path / "notes.fits"
    text.write_text("hello, this is not an image\n")
    truncated = tmp_path / "half.fits"
    truncated.write_bytes((real_dir / "sfft" / "DEC-OBS04a.mini.fits").read_bytes()[:200_000])
    r = extractor.extract(text, plan)
    assert (r.record["status"], r.sources) == ("failed", None)
    assert r.record["reason"].startswith("not a FITS file: text starting 'hello, this '")
    r = extractor.extract(truncated, plan)
    assert r.record["status"] == "incomplete"
    assert r.record["reason"] == "truncated: header declares 538560 bytes, file has 200000"
