"""A seeded FITS mutation fuzzer: poison inputs made from real and generated frames.

`Fuzzer(bases, seed).mutants(n)` yields `Mutant`s, each a base frame with 1-4 edits:

- ``value``     a card's value replaced (blank, wrong type, out of range, absurd size,
                unterminated string, garbage), structural cards most often
- ``drop``      a structural card blanked out or turned into a COMMENT
- ``dup``       a structural card repeated over another card, with another value
- ``keyword``   a card's keyword garbled (typo, lower case, non-ASCII bytes)
- ``end``       the END card removed, or an END card early
- ``flip``      random bytes changed in a header or in the data
- ``truncate``  the file cut at a random offset (in a header, the data, mid-block)
- ``append``    bytes after the last HDU (garbage, or a header without its data)

Tile-compressed bases get their Z-keywords (ZBITPIX, ZNAXISn, ZTILEn, ZCMPTYPE) and
TFORMn among the structural cards, so their headers are mutated too.

Run as a script for long runs: `python tests/fitsfuzz.py --mutants 2000 --seed 3`
prints the verdicts by kind and every finding (an "internal error" or a hang).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "XTENSION", "PCOUNT",
              "GCOUNT", "EXTEND", "GROUPS", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2",
              "ZTILE1", "ZTILE2", "ZCMPTYPE", "TFORM1", "TFIELDS", "BSCALE", "BZERO", "END")
#: Values a mutated card may get (the text after "= ").
VALUES = ("", "T", "F", "0", "-1", "1", "2", "3", "8", "16", "-32", "-64", "64", "12", "999", "1000",
          "2147483647", "2147483648", "4294967296", "9223372036854775808", "-9223372036854775809",
          "100000000000000000000000000000", "1e308", "1.5", "-0.0", "NaN", "(1, 2)", "'IMAGE   '",
          "'BINTABLE'", "'TABLE   '", "'        '", "''", "'RICE_1  '", "'GZIP_2  '", "'FOO     '",
          "'unterminated", "'A''B'", "42", "x" * 10, "T F", "1 2", "/ only a comment", "=",
          "'" + "A" * 66 + "'")
CARD = 80
BLOCK = 2880
KINDS = {"value": 30, "drop": 8, "dup": 8, "keyword": 6, "end": 5, "flip": 20, "truncate": 10,
         "append": 5, "absurd": 8}


@dataclass
class Mutant:
    name: str
    base: str
    edits: list[str] = field(default_factory=list)
    data: bytes = b""


def header_cards(data: bytes) -> list[tuple[int, int]]:
    """(offset, header index) of every card of every header, found by scanning block
    starts for SIMPLE/XTENSION and cards up to END (tolerant of a damaged file)."""
    out = []
    index = -1
    offset = 0
    while offset + CARD <= len(data):
        keyword = data[offset:offset + 8]
        if offset % BLOCK == 0 and keyword in (b"SIMPLE  ", b"XTENSION"):
            index += 1
            pos = offset
            while pos + CARD <= len(data):
                out.append((pos, index))
                if data[pos:pos + 8] == b"END     ":
                    break
                pos += CARD
            offset = (pos // BLOCK + 1) * BLOCK
            continue
        offset += BLOCK
    return out


def card(keyword: str, value: str) -> bytes:
    text = f"{keyword:<8}= {value:>20}" if value and not value.startswith("'") else f"{keyword:<8}= {value}"
    return text.encode("ascii", "replace")[:CARD].ljust(CARD)


def keyword_of(data: bytes, offset: int) -> str:
    return data[offset:offset + 8].decode("ascii", "replace").rstrip()


class Fuzzer:
    """Mutants of `bases` (path -> bytes), all from `seed`."""

    def __init__(self, bases: dict[str, bytes], seed: int):
        self.bases = bases
        self.rng = random.Random(seed)

    def mutants(self, n: int):
        names = sorted(self.bases)
        for i in range(n):
            base = names[i % len(names)]
            m = Mutant(f"{i:04d}_{Path(base).name}", base, data=self.bases[base])
            for _ in range(self.rng.randint(1, 4)):
                kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
                if kind == "truncate" and m.edits and any(e.startswith("truncate") for e in m.edits):
                    continue
                getattr(self, f"_{kind}")(m)
            yield m

    def _pick_card(self, m: Mutant, structural: float = 0.75) -> tuple[int, str] | None:
        cards = header_cards(m.data)
        if not cards:
            return None
        wanted = [c for c in cards if keyword_of(m.data, c[0]) in STRUCTURAL[:-1]]
        pool = wanted if wanted and self.rng.random() < structural else cards
        offset, _ = self.rng.choice(pool)
        return offset, keyword_of(m.data, offset)

    def _put(self, m: Mutant, offset: int, new: bytes) -> None:
        m.data = m.data[:offset] + new + m.data[offset + len(new):]

    def _value(self, m: Mutant) -> None:
        picked = self._pick_card(m)
        if picked:
            offset, keyword = picked
            value = self.rng.choice(VALUES)
            self._put(m, offset, card(keyword, value))
            m.edits.append(f"value {keyword}={value[:24]}")

    def _absurd(self, m: Mutant) -> None:
        cards = [(o, keyword_of(m.data, o)) for o, _ in header_cards(m.data)]
        sizes = [(o, k) for o, k in cards if k.startswith(("NAXIS", "ZNAXIS", "PCOUNT", "GCOUNT", "ZTILE"))]
        if sizes:
            offset, keyword = self.rng.choice(sizes)
            value = str(self.rng.choice([10 ** 9, 2 ** 31, 2 ** 31 - 1, 2 ** 40, 2 ** 62, 10 ** 18, 65536]))
            self._put(m, offset, card(keyword, value))
            m.edits.append(f"absurd {keyword}={value}")

    def _drop(self, m: Mutant) -> None:
        picked = self._pick_card(m, structural=1.0)
        if picked:
            offset, keyword = picked
            blank = b" " * CARD if self.rng.random() < 0.5 else card("COMMENT", "")[:8] + b" " * 72
            self._put(m, offset, blank)
            m.edits.append(f"drop {keyword}")

    def _dup(self, m: Mutant) -> None:
        cards = header_cards(m.data)
        structural = [(o, h) for o, h in cards if keyword_of(m.data, o) in STRUCTURAL[:-1]]
        if not structural:
            return
        offset, hdu = self.rng.choice(structural)
        keyword = keyword_of(m.data, offset)
        others = [o for o, h in cards if h == hdu and o != offset and keyword_of(m.data, o) != "END"]
        if others:
            where = self.rng.choice(others)
            value = self.rng.choice(VALUES) if self.rng.random() < 0.7 else \
                m.data[offset + 10:offset + CARD].decode("ascii", "replace").strip()
            self._put(m, where, card(keyword, value))
            m.edits.append(f"dup {keyword}={value[:24]}")

    def _keyword(self, m: Mutant) -> None:
        picked = self._pick_card(m)
        if picked:
            offset, keyword = picked
            garbled = self.rng.choice([keyword[::-1], keyword.lower(), keyword[:-1] + "\xe9",
                                       keyword + "X", "", "HIERARCH"])
            self._put(m, offset, garbled.encode("latin-1", "replace")[:8].ljust(8))
            m.edits.append(f"keyword {keyword}->{garbled!r}")

    def _end(self, m: Mutant) -> None:
        cards = header_cards(m.data)
        ends = [o for o, _ in cards if keyword_of(m.data, o) == "END"]
        if ends and self.rng.random() < 0.5:
            self._put(m, self.rng.choice(ends), b" " * CARD)
            m.edits.append("end removed")
        elif cards:
            offset, _ = self.rng.choice(cards)
            self._put(m, offset, b"END".ljust(CARD))
            m.edits.append("end early")

    def _flip(self, m: Mutant) -> None:
        cards = header_cards(m.data)
        in_header = cards and self.rng.random() < 0.6
        for _ in range(self.rng.randint(1, 8)):
            if in_header:
                offset = self.rng.choice(cards)[0] + self.rng.randrange(CARD)
            else:
                offset = self.rng.randrange(len(m.data))
            if offset < len(m.data):
                self._put(m, offset, bytes([self.rng.randrange(256)]))
        m.edits.append(f"flip {'header' if in_header else 'anywhere'}")

    def _truncate(self, m: Mutant) -> None:
        if len(m.data) > 1:
            at = self.rng.choice([self.rng.randrange(len(m.data)), self.rng.randrange(1, 9) * BLOCK,
                                  len(m.data) - self.rng.randrange(1, BLOCK)])
            m.data = m.data[:max(0, min(at, len(m.data) - 1))]
            m.edits.append(f"truncate at {len(m.data)}")

    def _append(self, m: Mutant) -> None:
        if self.rng.random() < 0.5:
            extra = bytes(self.rng.randrange(256) for _ in range(self.rng.choice([1, 80, BLOCK])))
            m.edits.append(f"append {len(extra)} random bytes")
        else:
            header = card("XTENSION", "'IMAGE   '") + card("BITPIX", "-32") + card("NAXIS", "2") + \
                card("NAXIS1", "4096") + card("NAXIS2", "4096") + card("PCOUNT", "0") + \
                card("GCOUNT", "1") + b"END".ljust(CARD)
            extra = header.ljust(BLOCK)
            m.edits.append("append a header without its data")
        m.data = m.data + extra


def set_card(data: bytes, hdu: int, keyword: str, text: str) -> bytes:
    """`data` with the card `keyword` of header `hdu` replaced by `keyword` + `text`."""
    cards = [(o, h) for o, h in header_cards(data) if h == hdu]
    for offset, _ in cards:
        if keyword_of(data, offset) == keyword:
            new = f"{keyword:<8}{text}".encode()[:80].ljust(80)
            return data[:offset] + new + data[offset + 80:]
    raise KeyError(keyword)


def mef(tmp_path: Path) -> bytes:
    """A real two-HDU frame (image in HDU 1), else a generated 2-CCD exposure."""
    from conftest import REAL
    from sexstream import synthetic

    real = REAL / "astroquery" / "ukidss_image.fits"
    if real.is_file():
        return real.read_bytes()
    return synthetic.make_exposure(tmp_path / "mef.fits", seed=3, nx=64, ny=64, n_ccd=2).read_bytes()


#: The poison headers of issue 15, on HDU 1 of `mef`: (keyword, card text, reason).
CASES = {
    "blank_xtension.fits": ("XTENSION", "=                     ",
                            "invalid FITS header in HDU 1: XTENSION has no value"),
    "naxis_2e9.fits": ("NAXIS", "=           2147483648",
                       "invalid FITS header in HDU 1: NAXIS = 2147483648 is out of range (0-999)"),
    "numeric_xtension.fits": ("XTENSION", "=                   42",
                              "invalid FITS header in HDU 1: XTENSION = 42 is not a string"),
    "bad_gcount.fits": ("GCOUNT", "= 1x", "invalid FITS header in HDU 1: GCOUNT card is unparsable "
                        "(unparsable value '1x'): 'GCOUNT  = 1x'"),
    "bad_naxis.fits": ("NAXIS", "= two", "invalid FITS header in HDU 1: NAXIS card is unparsable "
                       "(unparsable value 'two'): 'NAXIS   = two'"),
}


def bases(folder: Path, real: list[Path]) -> dict[str, bytes]:
    """The frames to mutate: the real ones given, and generated ones written into
    `folder` (one CCD, a 2-CCD MEF, a RICE tile-compressed CCD)."""
    import warnings

    from astropy.io import fits

    from sexstream import synthetic

    folder.mkdir(parents=True, exist_ok=True)
    plain = synthetic.make_exposure(folder / "gen_ccd.fits", seed=5, nx=128, ny=128, n_ccd=1, overwrite=True)
    mef = synthetic.make_exposure(folder / "gen_mef.fits", seed=6, nx=96, ny=96, n_ccd=2, overwrite=True)
    with fits.open(plain) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        tiled = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(hdu.data, hdu.header,
                                                                   compression_type="RICE_1")])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tiled.writeto(folder / "gen_rice.fits", overwrite=True)
    out = {str(p): p.read_bytes() for p in (plain, mef, folder / "gen_rice.fits")}
    out.update({str(p): p.read_bytes() for p in real})
    return out


@dataclass
class Verdict:
    mutant: Mutant
    status: str
    reason: str | None
    seconds: float

    @property
    def finding(self) -> str | None:
        """Why this verdict is a bug of sexstream's, or None: an exception the core did
        not foresee ("internal error"), or a hang outside SExtractor."""
        reason = self.reason or ""
        if reason.startswith("internal error") or reason.startswith("no verdict within"):
            return reason
        if self.status != "ok" and not reason:
            return "no reason"
        return None


def run(mutants, folder: Path, plan) -> list[Verdict]:
    """Write every mutant into `folder` and measure it with `plan`."""
    from sexstream import extractor

    folder.mkdir(parents=True, exist_ok=True)
    verdicts = []
    for m in mutants:
        path = folder / f"{m.name}"
        path.write_bytes(m.data)
        m.data = b""  # kept on disk only: a large parent makes every fork slower
        t0 = time.monotonic()
        r = extractor.extract(path, plan)
        verdicts.append(Verdict(m, r.record["status"], r.record["reason"], time.monotonic() - t0))
    return verdicts


def summary(verdicts: list[Verdict]) -> str:
    by_status = Counter(v.status for v in verdicts)
    by_reason = Counter((v.reason or "ok").split(":")[0] for v in verdicts)
    lines = [f"{len(verdicts)} mutants: " + ", ".join(f"{n} {s}" for s, n in by_status.most_common()),
             f"slowest verdict {max(v.seconds for v in verdicts):.2f} s",
             "reasons (first part):"]
    lines += [f"  {n:5d}  {r}" for r, n in by_reason.most_common()]
    findings = [v for v in verdicts if v.finding]
    lines.append(f"findings: {len(findings)}")
    lines += [f"  {v.mutant.name} [{'; '.join(v.mutant.edits)}]: {v.finding}" for v in findings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sexstream import extractor, settings

    p = argparse.ArgumentParser(description="Fuzz sexstream's core with mutated FITS frames.")
    p.add_argument("--mutants", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--work", default="/tmp/sexstream-fuzz")
    p.add_argument("--real", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    args = p.parse_args(argv)
    real = sorted(Path(args.real).rglob("*.fits")) if Path(args.real).is_dir() else []
    work = Path(args.work)
    frames = bases(work / "bases", real)
    plan = extractor.prepare(settings.load(timeout=args.timeout, retries=0))
    t0 = time.monotonic()
    verdicts = run(Fuzzer(frames, args.seed).mutants(args.mutants), work / "mutants", plan)
    print(summary(verdicts))
    print(f"{time.monotonic() - t0:.1f} s for {len(verdicts)} mutants of {len(frames)} frames")
    return 1 if any(v.finding for v in verdicts) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
