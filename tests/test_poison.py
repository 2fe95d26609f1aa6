"""Poison inputs (issue 15): whatever an image does to the core -- an odd header card, an
absurd size, an exception, a hang, the death of the process measuring it, memory
exhausted -- it ends as that image's row with a clear reason, within the bound."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import fitsfuzz
from conftest import real_images
from fitsfuzz import CASES, mef, set_card
from sexstream import catalog, extractor, settings, structure, synthetic


@pytest.fixture(scope="module")
def plan():
    return extractor.prepare(settings.load(timeout=20, retries=0))


def test_the_poison_headers_of_the_issue_are_rows_with_clear_reasons(tmp_path, plan):
    data = mef(tmp_path)
    for name, (keyword, text, reason) in CASES.items():
        path = tmp_path / name
        path.write_bytes(set_card(data, 1, keyword, text))
        t0 = time.monotonic()
        r = extractor.extract(path, plan).record
        assert (r["status"], r["reason"]) == ("failed", reason), name
        assert time.monotonic() - t0 < 10, name  # no loop over a declared size


def test_a_declared_size_beyond_max_image_bytes_is_failed_not_incomplete(tmp_path, plan):
    data = mef(tmp_path)
    path = tmp_path / "huge.fits"
    path.write_bytes(set_card(data, 1, "NAXIS2", "=           1000000000"))
    r = extractor.extract(path, plan).record
    assert r["status"] == "failed"
    assert r["reason"].startswith("too large: HDU 1 declares ") and r["reason"].endswith(
        f"bytes of data > max_image_bytes {plan.max_image_bytes}")


def test_duplicated_structural_card_with_two_values_is_refused(tmp_path, plan):
    data = mef(tmp_path)
    cards = [o for o, h in fitsfuzz.header_cards(data) if h == 1]
    last = [o for o in cards if fitsfuzz.keyword_of(data, o) not in ("END", "")][-1]
    bad = data[:last] + fitsfuzz.card("BITPIX", "16") + data[last + 80:]
    (tmp_path / "dup.fits").write_bytes(bad)
    r = extractor.extract(tmp_path / "dup.fits", plan).record
    assert r["status"] == "failed"
    assert r["reason"].startswith("invalid FITS header in HDU 1: BITPIX is given 2 times with different values")


def test_structural_values_are_parsed_as_fits_says():
    assert structure.card_value(b"NAXIS   =                    2 / axes".ljust(80)) == 2
    assert structure.card_value(b"SIMPLE  =                    T".ljust(80)) is True
    assert structure.card_value(b"XTENSION= 'IMAGE   '           / ext".ljust(80)) == "IMAGE"
    assert structure.card_value(b"OBJECT  = 'it''s'".ljust(80)) == "it's"
    assert structure.card_value(b"BSCALE  =               1.5D2".ljust(80)) == 150.0
    assert structure.card_value(b"BLANK   =".ljust(80)) is None
    with pytest.raises(ValueError):
        structure.card_value(b"NAXIS   = 2x".ljust(80))
    with pytest.raises(ValueError):
        structure.card_value(b"OBJECT  = 'open".ljust(80))


def test_an_exception_in_the_core_is_the_images_row(tmp_path, plan, monkeypatch):
    good = synthetic.make_exposure(tmp_path / "good.fits", seed=1, nx=64, ny=64)

    def broken(header, shape):
        raise ZeroDivisionError("a WCS library bug")

    monkeypatch.setattr(extractor.inputs, "footprint", broken)
    r = extractor.extract(good, plan).record
    assert (r["status"], r["reason"]) == (
        "failed", "internal error: ZeroDivisionError: a WCS library bug (while evaluating the WCS)")


def test_a_hang_in_python_is_cut_at_the_bound(tmp_path, monkeypatch):
    good = synthetic.make_exposure(tmp_path / "good.fits", seed=1, nx=64, ny=64)
    monkeypatch.setattr(extractor.structure, "walk_hdus", lambda *a, **k: time.sleep(3600))
    plan = extractor.prepare(settings.load(timeout=1.0, retries=2))
    before = set(children(os.getpid()))
    t0 = time.monotonic()
    r = extractor.extract(good, plan).record
    assert time.monotonic() - t0 < 10
    assert (r["status"], r["attempts"]) == ("failed", 1)  # a hang in Python is not retried
    assert r["reason"] == "no verdict within 1 s: the measurement was stopped (while reading the headers)"
    assert set(children(os.getpid())) <= before  # the stuck child was killed and reaped


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def test_memory_exhausted_is_the_images_row(tmp_path, plan, monkeypatch):
    good = synthetic.make_exposure(tmp_path / "good.fits", seed=1, nx=64, ny=64)
    monkeypatch.setattr(catalog, "read", lambda *a, **k: bytearray(1 << 46))  # 64 TiB
    r = extractor.extract(good, plan).record
    assert (r["status"], r["reason"]) == ("failed", "out of memory (while reading the catalog)")


def test_a_measuring_process_killed_once_is_measured_again(tmp_path, plan, monkeypatch):
    good = synthetic.make_exposure(tmp_path / "good.fits", seed=1, nx=64, ny=64)
    once = tmp_path / "killed-once"
    real = catalog.read

    def killed_once(*args, **kwargs):
        if not once.exists():
            once.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "read", killed_once)
    r = extractor.extract(good, plan).record
    assert (r["status"], r["attempts"], r["reason"]) == ("ok", 2, None)
    assert r["n_sources"] > 0


def test_a_file_that_kills_its_measuring_process_twice_is_quarantined(tmp_path, monkeypatch):
    good = synthetic.make_exposure(tmp_path / "good.fits", seed=1, nx=64, ny=64)
    monkeypatch.setattr(catalog, "read", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    plan = extractor.prepare(settings.load(timeout=20, retries=2))
    r = extractor.extract(good, plan).record
    assert (r["status"], r["attempts"]) == ("failed", 2)
    assert r["reason"] == ("quarantined: the process measuring it died 2 times (killed by SIGKILL; "
                           "killed by SIGKILL)")


def test_fuzzed_frames_all_end_in_clear_verdicts_within_the_bound(tmp_path, plan):
    """400 seeded mutants of real and generated frames (1-4 edits each: card values,
    types, missing and duplicated structural cards, truncations, byte flips, absurd
    sizes, tile-compression headers) through the core."""
    real = [p for p in real_images() if p.suffix == ".fits"]
    frames = fitsfuzz.bases(tmp_path / "bases", real)
    verdicts = fitsfuzz.run(fitsfuzz.Fuzzer(frames, seed=15).mutants(400), tmp_path / "mutants", plan)
    print(fitsfuzz.summary(verdicts))
    assert {v.status for v in verdicts} <= {"ok", "failed", "incomplete"}
    assert not [v for v in verdicts if v.finding], fitsfuzz.summary(verdicts)
    assert max(v.seconds for v in verdicts) < plan.timeout + extractor.SANDBOX_GRACE_S + 5
    assert sum(v.status == "ok" for v in verdicts) > 20  # some mutants still reach SExtractor
