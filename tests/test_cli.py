"""The `sexstream` command line of the core: extract, params, settings precedence."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sexstream import binary, params, settings

SEXSTREAM = [sys.executable, "-m", "streaming.cli"]


def run(*args: str, check: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SEXSTREAM, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == check, proc.stderr[-2000:]
    return proc


def test_params_lists_all_428_with_units_and_vector_sizes():
    out = run("params", "--json").stdout
    table = {p["name"]: p for p in json.loads(out)}
    assert len(table) == 428
    assert table["FLUX_APER"]["vector_axes"] == 1 and table["FLUX_APER"]["unit"] == "count"
    assert table["VIGNET"]["vector_axes"] == 2
    assert table["NUMBER"]["vector_axes"] == 0 and table["NUMBER"]["description"] == "Running object number"
    text = run("params", "kron").stdout
    assert "KRON_RADIUS" in text and "FLUX_APER" not in text


def test_extract_prints_csv_and_writes_parquet(real_dir, tmp_path):
    image = real_dir / "sep" / "image.fits"
    out = run("extract", str(image), "--config", str(real_dir / "sep" / "default.sex"),
              "--keys", "NUMBER,FLUX_APER(2),FLAGS", "--fitskeys", "OBJECT").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 65 and rows[0]["NUMBER"] == "1"
    assert json.loads(rows[0]["FLUX_APER"])[0] == pytest.approx(4709.64, abs=0.01)
    parquet = tmp_path / "cat.parquet"
    run("extract", str(image), str(image), "--keys", "NUMBER,X_IMAGE", "-o", str(parquet))
    t = pq.read_table(parquet)
    assert t.num_rows > 0 and t.num_rows % 2 == 0 and t.schema.field("NUMBER").type.bit_width == 32


def test_extract_rejects_a_typo_before_touching_images_and_reports_bad_images(tmp_path):
    bad = run("extract", "/nonexistent.fits", "--keys", "NUMBER,MAG_AUTOO", check=2)
    assert "did you mean MAG_AUTO" in bad.stderr
    bad = run("extract", "/nonexistent.fits", "--set", "DETECT_THRESH", check=2)
    text = tmp_path / "x.fits"
    text.write_text("plain text")
    failed = run("extract", str(text), check=1)
    assert "not a FITS file" in failed.stderr


def test_settings_file_then_flags_override_the_packaged_defaults(tmp_path):
    toml = tmp_path / "site.toml"
    toml.write_text('[catalog]\nkeys = ["NUMBER", "FLUX_APER(3)"]\n[sextractor]\nset = {DETECT_THRESH = "3"}\n'
                    '[stream]\ntrigger = 5.0\n')
    s = settings.load(toml)
    assert s.keys == ("NUMBER", "FLUX_APER(3)") and s.trigger == 5.0 and s.overrides == (("DETECT_THRESH", "3"),)
    s = settings.load(toml, trigger=0.5, overrides=(("BACK_SIZE", "128"),))
    assert s.trigger == 0.5 and dict(s.overrides) == {"DETECT_THRESH": "3", "BACK_SIZE": "128"}
    assert Path(s.sink).is_absolute()
    toml.write_text("[stream]\ntriger = 1\n")
    with pytest.raises(ValueError, match="unknown setting stream.triger"):
        settings.load(toml)


def test_vector_key_sizes_are_parsed_and_checked():
    known = binary.parameters(binary.find_binary())
    keys = params.validate_keys(["NUMBER", "VIGNET(15,15)", "FLUX_APER", "flux_radius(3)"], known)
    assert [k.spec for k in keys] == ["NUMBER", "VIGNET(15,15)", "FLUX_APER(1)", "FLUX_RADIUS(3)"]
    with pytest.raises(ValueError, match="VIGNET takes 2 size"):
        params.validate_keys(["VIGNET(5)"], known)
    with pytest.raises(ValueError, match="malformed"):
        params.parse_key("FLUX_APER(0)")
    assert settings.split_list("NUMBER, VIGNET(5,5),FLUX_APER(3)") == ["NUMBER", "VIGNET(5,5)", "FLUX_APER(3)"]


def test_a_missing_binary_is_a_clear_early_error():
    with pytest.raises(binary.BinaryNotFoundError, match="not found"):
        binary.find_binary("/opt/nowhere/source-extractor")
