"""The OpenFX plug-in in a host whose locale writes decimals with a comma (Qt hosts such as Nuke and Resolve set the
process's locale from the user's, de_DE writes 0.25 as "0,25"): the numbers it sends the bridge, its reading of
FACEFIX_OFX_TIMEOUT and the numbers in its messages stay in C notation, its render is the C locale's bit for bit,
and the host's own locale is left as it was, on the rendering thread and on the others. The bridge's header names
match by ASCII rules, whatever the locale's letter case says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, libasan

HERE = Path(__file__).resolve().parent
COMMA_LOCALE = "de_DE.UTF-8"
LOCALE_SOURCES = Path("/usr/share/i18n/locales")


def _build_locale(folder: Path, source: str, charmap: str) -> Path:
    """``folder``, holding locale ``source.charmap`` compiled with localedef from the system's locale sources (for
    LOCPATH); skips the test where it cannot be built (CI machines may lack localedef or the sources)."""
    localedef = shutil.which("localedef")
    if localedef is None or not (LOCALE_SOURCES / source).exists():
        pytest.skip(f"cannot build the locale {source}.{charmap}: no localedef, or no {LOCALE_SOURCES / source}")
    done = subprocess.run([localedef, "-i", source, "-f", charmap, str(folder / f"{source}.{charmap}")],
                          capture_output=True, text=True, timeout=120)
    if not (folder / f"{source}.{charmap}" / "LC_CTYPE").exists():  # (localedef exits 1 on mere warnings)
        pytest.skip(f"localedef could not build {source}.{charmap}: {done.stderr.strip()[-300:]}")
    return folder


@pytest.fixture(scope="module")
def comma_locale(tmp_path_factory) -> Path:
    """A LOCPATH folder holding de_DE.UTF-8: decimals written with a comma."""
    return _build_locale(tmp_path_factory.mktemp("locales"), "de_DE", "UTF-8")


# Standard library + numpy only: it also runs under the AddressSanitizer preload. For each locale in turn, the
# process's locale is set as a Qt host sets it (setlocale(LC_ALL, name) in C), then a render with an animated
# fractional strength, a render the plug-in refuses (its message carries numbers), and a bridge that never answers
# with FACEFIX_OFX_TIMEOUT=0.5 (hostile.py). Another thread formats 0.25 all through the render.
SCRIPT = r"""
import ctypes, json, sys, threading
from pathlib import Path
import numpy as np
here, bundle, data, out = sys.argv[1:5]
sys.path.insert(0, here)
import ofx_host, hostile

libc = ctypes.CDLL(None)
libc.setlocale.restype = ctypes.c_char_p
libc.setlocale.argtypes = [ctypes.c_int, ctypes.c_char_p]
LC_NUMERIC, LC_ALL = 1, 6  # glibc's

def quarter():
    text = ctypes.create_string_buffer(32)
    libc.snprintf(text, 32, b"%.2f", ctypes.c_double(0.25))
    return text.value.decode()

pixels = np.load(Path(data) / "pixels.npy")
tracks = (Path(data) / "tracks.json").read_text()
first, last = 1001, 1000 + len(pixels)
facts = {}
for name in sys.argv[5:]:
    if libc.setlocale(LC_ALL, name.encode()) is None:
        sys.exit(f"setlocale(LC_ALL, {name!r}) failed")
    got = facts[name] = {"quarter_before": quarter()}
    host = ofx_host.Host(bundle)
    host.source(lambda n: pixels[n - first] if first <= n <= last else None,
                (10.0, 20.0, 10.0 + pixels.shape[2], 20.0 + pixels.shape[1]), (first, last))
    host.set("device", 1)
    host.set("tracks", tracks)
    host.set_keys("strength", {first: 0.25, last: 1.0})
    seen, rendered = set(), threading.Event()
    def other_thread():
        while True:  # at least once, however soon the render ends
            seen.add(quarter())
            if rendered.is_set():
                break
    watcher = threading.Thread(target=other_thread)
    watcher.start()
    try:
        got["frames_needed"] = host.frames_needed(first + 2)
        np.save(Path(out) / f"{name}.npy", host.render(first + 2))
    finally:
        rendered.set()
        watcher.join()
    got["quarter_other_thread"] = sorted(seen)
    try:
        host.render(first + 2, None, 0.5)
        got["scale_message"] = None
    except ofx_host.OfxError as err:
        got["scale_message"] = err.messages[-1]
    host.close()
    never = next(case for case in hostile.CASES if case.name == "no answer at all")
    got["timeout_message"], got["timeout_s"] = hostile.run_case(ofx_host, bundle, never, Path(out) / name)
    got["quarter_after"] = quarter()
    got["numeric_after"] = libc.setlocale(LC_NUMERIC, None).decode()
(Path(out) / "facts.json").write_text(json.dumps(facts))
print("ok")
"""


def _run_in_locales(bundle: Path, clip, comma_locale: Path, tmp_path: Path, env: dict[str, str] | None = None):
    """Run SCRIPT in the C locale, then in de_DE.UTF-8: ({locale: facts}, {locale: render})."""
    pixels, tracks = clip
    np.save(tmp_path / "pixels.npy", pixels)
    (tmp_path / "tracks.json").write_text(json.dumps(tracks))
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(HERE), str(bundle), str(tmp_path), str(out), "C",
                           COMMA_LOCALE], env={**os.environ, "LOCPATH": str(comma_locale), **(env or {})},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-3000:] + done.stderr[-4000:]
    facts = json.loads((out / "facts.json").read_text())
    return facts, {name: np.load(out / f"{name}.npy") for name in facts}, done.stderr


def _check(facts, renders, clip):
    c, comma = facts["C"], facts[COMMA_LOCALE]
    assert c["quarter_before"] == "0.25" and comma["quarter_before"] == "0,25"  # the host's locale is a comma one
    for got in (c, comma):
        assert got["frames_needed"] == [1001 + 2 - 4, 1001 + 2]  # the bridge read the settings (temporal 0.5)
        assert got["scale_message"] is not None and "render scale 0.5 x 0.5" in got["scale_message"]
        assert "did not answer within 0.5 s" in got["timeout_message"]
        assert 0.45 <= got["timeout_s"] < 3.0, got["timeout_s"]  # half a second, read as such
    # the render: the C locale's bit for bit, and a real one (the stand-in model changed the face)
    assert renders[COMMA_LOCALE].tobytes() == renders["C"].tobytes()
    assert not np.array_equal(renders["C"], clip[0][2])
    # the host's locale, as it was: on the thread that rendered, and on one that ran all through the render
    assert comma["quarter_other_thread"] == ["0,25"]
    assert comma["quarter_after"] == "0,25" and comma["numeric_after"] == COMMA_LOCALE


def test_a_comma_decimal_host_gets_the_c_locale_s_render(bundle, clip, comma_locale, host_bridge, fake_model,
                                                         tmp_path):
    facts, renders, _ = _run_in_locales(bundle, clip, comma_locale, tmp_path)
    _check(facts, renders, clip)


def test_a_comma_decimal_host_runs_clean_under_asan_and_ubsan(sanitized_bundle, clip, comma_locale, host_bridge,
                                                              fake_model, tmp_path):
    preload = libasan()
    if preload is None:
        pytest.skip("no libasan")
    env = {"LD_PRELOAD": preload, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    facts, renders, stderr = _run_in_locales(sanitized_bundle, clip, comma_locale, tmp_path, env)
    _check(facts, renders, clip)
    assert "runtime error" not in stderr and "AddressSanitizer" not in stderr


# A float conversion (%g, %.17g, %f, %e, %a) in a format string.
FLOAT_CONVERSION = re.compile(r"%[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*)?)?(?:hh|h|ll|l|L|q|j|z|t)?[aAeEfFgG]")
LIBC_FORMATTING = re.compile(r"(?<!\w)(v?[fs]?n?printf|v?[fs]?scanf)\s*\(")
LIBC_PARSING = re.compile(r"(?<!\w)(strto(?:d|f|ld)|atof)\s*\(")
STRING_LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"')


def _call_arguments(source: str, open_paren: int) -> str:
    """The text from ``open_paren`` to its matching ``)``, string and character literals included whole."""
    depth, k = 0, open_paren
    while k < len(source):
        ch = source[k]
        if ch in "\"'":
            k += 1
            while source[k] != ch:
                k += 2 if source[k] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return source[open_paren:k + 1]
        k += 1
    raise AssertionError(f"unbalanced call at {open_paren}")


def test_every_float_the_plugin_formats_or_parses_goes_through_its_c_locale_helpers():
    """The C library's float formatting and parsing follow LC_NUMERIC: the plug-in calls them only inside its
    c_vsnprintf / c_strtod helpers (everything else uses c_snprintf, buf_fmt or c_strtod)."""
    source = (REPO / "openfx" / "src" / "facefix_ofx.c").read_text()
    helpers = [m.span() for m in re.finditer(r"\nstatic [^\n]*\bc_(?:vsnprintf|strtod)\([^\n]*\{\n.*?\n\}\n", source,
                                            re.S)]
    assert len(helpers) == 2, "the c_vsnprintf and c_strtod helpers are gone"

    def in_helper(at: int) -> bool:
        return any(start <= at < end for start, end in helpers)

    offenders = []
    for call in LIBC_FORMATTING.finditer(source):
        formats = "".join(lit[1:-1] for lit in STRING_LITERAL.findall(_call_arguments(source, call.end() - 1)))
        passed_on = call.group(1).startswith("v")  # a format from elsewhere (buf_fmt's): it may hold anything
        if (passed_on or FLOAT_CONVERSION.search(formats.replace("%%", ""))) and not in_helper(call.start()):
            offenders.append(f"line {source.count(chr(10), 0, call.start()) + 1}: {call.group(1)}")
    offenders += [f"line {source.count(chr(10), 0, m.start()) + 1}: {m.group(1)}"
                  for m in LIBC_PARSING.finditer(source) if not in_helper(m.start())]
    assert not offenders, offenders


# A bridge that names its headers in capitals, in the C locale and then in tr_TR.ISO-8859-9 (whose 'I' lower-cases
# to a dotless i): the plug-in must see its Transfer-Encoding in both.
HEADER_SCRIPT = r"""
import ctypes, json, sys
from pathlib import Path
here, bundle, out = sys.argv[1:4]
sys.path.insert(0, here)
import ofx_host, hostile

libc = ctypes.CDLL(None)
libc.setlocale.restype = ctypes.c_char_p
libc.setlocale.argtypes = [ctypes.c_int, ctypes.c_char_p]
head = hostile._headers(TRANSFER_ENCODING="chunked", CONTENT_LENGTH=str(len(hostile.WINDOW_BODY)))
shouting = hostile.Case("chunked, in capitals", "has a Transfer-Encoding",
                        {"/frames/window": hostile.raw(head + hostile.WINDOW_BODY)})
facts = {}
for name in sys.argv[4:]:
    if libc.setlocale(6, name.encode()) is None:  # LC_ALL
        sys.exit(f"setlocale(LC_ALL, {name!r}) failed")
    facts[name] = {"lower_I": libc.tolower(ord("I"))}
    facts[name]["message"], _ = hostile.run_case(ofx_host, bundle, shouting, Path(out) / name)
(Path(out) / "facts.json").write_text(json.dumps(facts))
print("ok")
"""


def test_header_names_match_whatever_the_host_s_letter_case_rules(bundle, tmp_path_factory, tmp_path):
    turkish = "tr_TR.ISO-8859-9"
    folder = _build_locale(tmp_path_factory.mktemp("locales"), "tr_TR", "ISO-8859-9")
    done = subprocess.run([sys.executable, "-c", HEADER_SCRIPT, str(HERE), str(bundle), str(tmp_path), "C", turkish],
                          env={**os.environ, "LOCPATH": str(folder)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-3000:] + done.stderr[-4000:]
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["C"]["lower_I"] == ord("i") and facts[turkish]["lower_I"] == 0xFD  # the locale's dotless i
    for got in facts.values():
        assert "has a Transfer-Encoding" in got["message"]
