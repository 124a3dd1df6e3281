"""The diagnosis as one self-contained HTML page: inline CSS and SVG, thumbnails as base64 PNG, no network.

Per track: the verdict, a timeline of each score (over its threshold, so every plot's flag line sits at 1) with the
flagged spans shaded, and the worst frames before and after the suggested repair."""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .report import Diagnosis, TrackDiagnosis
from .run import Preview
from .scores import KINDS, SCORES

__all__ = ["png_bytes", "render_html", "write_html"]

_COLOURS = {"warp": "#d9822b", "boil": "#8f5fd7", "waxy": "#2b9bd9", "drift": "#d64545"}
_VERDICT_COLOURS = {"clean": "#2e8b57", "restore": "#c98a1b", "regenerate": "#c23b3b"}


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) float in [0, 1] -> an 8-bit PNG file's bytes (no dependency beyond zlib)."""
    img = (np.clip(np.nan_to_num(rgb[..., :3]), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Area-resized to ``size`` px tall (nearest for enlargements)."""
    import torch
    import torch.nn.functional as F

    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        return np.zeros((size, size, 3), np.float32)
    out_w = max(1, int(round(w * size / h)))
    t = torch.from_numpy(np.ascontiguousarray(rgb[..., :3].transpose(2, 0, 1), dtype=np.float32))[None]
    mode = "area" if h > size else "nearest"
    return F.interpolate(t, size=(size, out_w), mode=mode)[0].numpy().transpose(1, 2, 0)


def _img(rgb: np.ndarray, alt: str, size: int = 160) -> str:
    data = base64.b64encode(png_bytes(_resize(rgb, size))).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" height="{size}">'


def _timeline(track: TrackDiagnosis, thresholds: dict[str, float], width: int = 860) -> str:
    """One SVG: a row per score, the score over its threshold (clipped at 3x), the threshold dashed, flagged
    spans shaded."""
    row_h, pad_l, pad_r = 54, 64, 12
    nums = track.numbers
    first, last = nums[0], nums[-1]
    span = max(1, last - first)
    plot_w = width - pad_l - pad_r

    def x(n: float) -> float:
        return pad_l + (n - first) / span * plot_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row_h * len(KINDS) + 26}" '
             f'role="img" aria-label="scores of track {track.id} over time">']
    cell = plot_w / max(1, span) if span else plot_w
    for r, kind in enumerate(KINDS):
        top = r * row_h + 4
        base = top + row_h - 10
        hgt = row_h - 16

        def y(v: float) -> float:
            return base - min(v, 3.0) / 3.0 * hgt  # noqa: B023
        parts.append(f'<rect x="{pad_l}" y="{top}" width="{plot_w}" height="{row_h - 10}" fill="#f7f7f9"/>')
        for sp in track.spans:
            if sp.kind == kind:
                x0 = x(sp.first) - cell / 2
                parts.append(f'<rect x="{max(pad_l, x0):.1f}" y="{top}" width="{min(x(sp.last) + cell / 2, pad_l + plot_w) - max(pad_l, x0):.1f}" '
                             f'height="{row_h - 10}" fill="{_COLOURS[kind]}" fill-opacity="0.22">'
                             f'<title>{kind} {sp.first}-{sp.last}, {sp.severity:.1f}x threshold</title></rect>')
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y(1.0):.1f}" y2="{y(1.0):.1f}" stroke="#888" '
                     'stroke-dasharray="4 3" stroke-width="1"/>')
        ratio = np.asarray(track.scores[kind]) / thresholds[kind]
        pts = " ".join(f"{x(n):.1f},{y(float(v)):.1f}" for n, v in zip(nums, ratio))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{_COLOURS[kind]}" stroke-width="1.8"/>')
        peak = float(np.max(track.scores[kind])) if len(nums) else 0.0
        parts.append(f'<text x="4" y="{top + 16}" font-size="13" font-weight="600" fill="{_COLOURS[kind]}">{kind}</text>')
        parts.append(f'<text x="4" y="{top + 32}" font-size="10" fill="#666">max {peak:.3g}</text>')
        parts.append(f'<text x="4" y="{top + 44}" font-size="10" fill="#666">flag &gt; {thresholds[kind]:g}</text>')
    axis_y = row_h * len(KINDS) + 16
    step = next(s * 10 ** e for e in range(0, 9) for s in (1, 2, 5) if s * 10 ** e * 8 >= span)
    ticks = [first] + [n for n in range((first // step + 1) * step, last, step) if n - first >= step / 2
                       and last - n >= step / 2] + [last]
    for n in ticks:
        parts.append(f'<text x="{x(float(n)):.1f}" y="{axis_y}" font-size="10" fill="#555" text-anchor="middle">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#eceef1;color:#222}
header{background:#1f2430;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:20px;font-weight:600} header .sub{color:#aab;font-size:13px;margin-top:4px;word-break:break-all}
main{max-width:920px;margin:0 auto;padding:18px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:16px 20px;margin-bottom:16px}
.verdict{display:inline-block;color:#fff;border-radius:14px;padding:3px 14px;font-weight:700;letter-spacing:.04em;
 text-transform:uppercase;font-size:13px}
.big{font-size:16px;padding:6px 18px}
code.cmd{display:block;background:#1f2430;color:#d8f0d0;padding:10px 12px;border-radius:6px;font-size:13px;
 white-space:pre-wrap;word-break:break-all;margin-top:8px}
ul{margin:8px 0 0 18px;padding:0} li{margin:3px 0;font-size:14px}
h2{font-size:17px;margin:0 0 8px} h3{font-size:14px;margin:14px 0 6px;color:#444}
.thumbs{display:flex;flex-wrap:wrap;gap:14px} .pair{text-align:center;font-size:12px;color:#555} .pair td{border:0;text-align:center;padding:0 2px}
.pair img{border-radius:4px;margin:2px;background:#000;image-rendering:auto}
.legend span{display:inline-block;margin-right:14px;font-size:12px} .legend i{display:inline-block;width:12px;
 height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;font-size:12px;margin-top:6px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.muted{color:#777;font-size:12px}
"""


def _verdict_badge(v: str, big: bool = False) -> str:
    return f'<span class="verdict{" big" if big else ""}" style="background:{_VERDICT_COLOURS.get(v, "#555")}">{html.escape(v)}</span>'


def render_html(diagnosis: Diagnosis, previews: Sequence[Preview] = ()) -> str:
    """The whole page as a string."""
    d = diagnosis
    e = html.escape
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>FaceFix diagnosis: {e(Path(d.input).name)}</title><style>{_CSS}</style></head><body>",
           f"<header><h1>FaceFix diagnosis</h1><div class='sub'>{e(d.input)} &middot; frames "
           f"{d.frames[0] if d.frames else '-'}-{d.frames[1] if d.frames else '-'} &middot; {len(d.tracks)} face "
           f"track{'s' if len(d.tracks) != 1 else ''}</div></header><main>"]
    out.append(f"<div class='card'>{_verdict_badge(d.verdict, True)}<ul>")
    out += [f"<li>{e(r)}</li>" for r in d.reasons]
    out.append(f"</ul><h3>Suggested</h3><code class='cmd'>{e(d.suggested)}</code>")
    if d.verdict == "regenerate":
        out.append("<p class='muted'>The repair above fixes what can be fixed; the reasons above call for a new "
                   "generation of the shot.</p>")
    out.append("</div>")
    legend = "".join(f"<span><i style='background:{_COLOURS[k]}'></i>{k}</span>" for k in KINDS)
    for t in d.tracks:
        out.append(f"<div class='card'><h2>Track {t.id} {_verdict_badge(t.verdict)}</h2>"
                   f"<div class='muted'>frames {t.numbers[0]}-{t.numbers[-1]} ({len(t.numbers)} faces)</div>")
        if t.reasons:
            out.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in t.reasons) + "</ul>")
        out.append(f"<h3>Scores over time <span class='muted'>(each over its threshold; dashed line = flag; "
                   f"shaded = flagged)</span></h3><div class='legend'>{legend}</div>{_timeline(t, d.thresholds)}")
        mine = [p for p in previews if p.track == t.id]
        if mine:
            out.append(f"<h3>Worst frames: before &rarr; after the suggested repair "
                       f"<span class='muted'>(restorer: {e(mine[0].model)})</span></h3><div class='thumbs'>")
            for p in mine:
                i = t.numbers.index(p.frame)
                flags = ", ".join(k for k in KINDS if t.flags[k][i]) or "none"
                out.append(f"<div class='pair'><table><tr><td>{_img(p.before, f'frame {p.frame} before')}</td>"
                           f"<td>{_img(p.after, f'frame {p.frame} after')}</td></tr><tr><td>before</td>"
                           f"<td>after</td></tr></table>frame {p.frame}: <b>{e(flags)}</b></div>")
            out.append("</div>")
        spans = t.spans[:12]
        if spans:
            out.append("<h3>Flagged spans</h3><table><tr><th>kind</th><th>frames</th><th>severity</th></tr>")
            out += [f"<tr><td>{s.kind}</td><td>{s.first}-{s.last}</td><td>{s.severity:.2f}x</td></tr>" for s in spans]
            if len(t.spans) > 12:
                out.append(f"<tr><td colspan='3' class='muted'>and {len(t.spans) - 12} more (see the JSON)</td></tr>")
            out.append("</table>")
        out.append("</div>")
    out.append("<div class='card'><h2>Hands</h2>")
    if d.hands_note:
        out.append(f"<p class='muted'>{e(d.hands_note)}</p>")
    else:
        n = len(d.hands)
        out.append(f"<p class='muted'>{n} flagged hand span{'s' if n != 1 else ''} (see the JSON report).</p>"
                   if n else "<p class='muted'>No hand defects flagged.</p>")
    out.append("</div><div class='card'><h2>What the scores mean</h2><table>"
               "<tr><th>score</th><th>unit and measure</th><th>flag above</th></tr>")
    out += [f"<tr><td>{k}</td><td>{e(SCORES[k])}</td><td>{d.thresholds[k]:g}</td></tr>" for k in KINDS]
    out.append("</table></div></main></body></html>\n")
    return "".join(out)


def write_html(diagnosis: Diagnosis, path: str | Path, previews: Sequence[Preview] = ()) -> None:
    """Write the page atomically (temp file, then rename)."""
    from ..io.atomic import atomic_write_text

    atomic_write_text(Path(path), render_html(diagnosis, previews))
