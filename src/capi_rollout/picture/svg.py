"""The SVG text of a rollout :class:`~capi_rollout.picture.model.Picture`.

Contract: pure (a Picture in, a str out), self-contained SVG 1.1: no scripts, no external fonts, images or links;
every text escaped. Layout: one row per Machine (its name on the left, its lifecycle spans coloured by state),
the phases as shaded bands behind the rows with their names and results on top, stalls as hatched spans on the
Machine's row, remediations and reboots as labelled markers, a time axis (minutes:seconds since the start, the
start's UTC clock time in the title) and a legend. Every mark also carries an SVG ``<title>`` (a tooltip).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from capi_rollout.picture.model import STATES, Picture

COLOURS = {"created": "#c6dbef", "provisioning": "#6baed6", "running": "#fdae6b", "ready": "#74c476",
           "deleting": "#fb6a4a"}
BANDS = {"succeeded": "#e5f5e0", "failed": "#fee0d2", "running": "#f0f0f0"}
MARK_COLOURS = {"remediation": "#a50f15", "reboot": "#54278f"}
WIDTH, LABEL_WIDTH, RIGHT, ROW, TOP = 1400, 200, 430, 24, 82


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _clock(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _step(span: float) -> float:
    """A round axis step giving 5 to 12 ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if span / step <= 12:
            return float(step)
    return span / 10


def render(picture: Picture) -> str:
    plot = WIDTH - LABEL_WIDTH - RIGHT
    span = max(picture.end - picture.start, 1e-9)

    def x(t: float) -> float:
        return LABEL_WIDTH + (min(max(t, picture.start), picture.end) - picture.start) / span * plot

    rows = {t.machine: i for i, t in enumerate(picture.tracks)}
    height = TOP + ROW * max(len(picture.tracks), 1) + 80
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           '<defs><pattern id="stall" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="3" height="6" fill="#969696" fill-opacity="0.6"/>'
           '</pattern></defs>',
           '<rect width="100%" height="100%" fill="white"/>']
    began = datetime.fromtimestamp(picture.start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    out.append(f'<text x="8" y="18" font-size="15" font-weight="bold">{_esc(picture.title)}</text>')
    if picture.subtitle:
        out.append(f'<text x="8" y="36">{_esc(picture.subtitle)}</text>')
    out.append(f'<text x="8" y="{54 if picture.subtitle else 36}" fill="#525252">from {began}; times are '
               'minutes:seconds since then</text>')
    bottom = TOP + ROW * len(picture.tracks)
    for band in picture.bands:
        x0, x1 = x(band.start), x(band.end)
        out.append(f'<rect x="{x0:.1f}" y="{TOP - 14}" width="{max(x1 - x0, 1):.1f}" height="{bottom - TOP + 14}" '
                   f'fill="{BANDS.get(band.result, BANDS["running"])}"><title>{_esc(band.name)}: {band.result}'
                   f'</title></rect>')
        out.append(f'<text x="{x0 + 3:.1f}" y="{TOP - 3}" fill="#252525">{_esc(band.name)} phase '
                   f'({_esc(band.result)})</text>')
        for edge in (x0, x1):
            out.append(f'<line x1="{edge:.1f}" y1="{TOP - 14}" x2="{edge:.1f}" y2="{bottom}" stroke="#737373" '
                       'stroke-dasharray="4 3"/>')
    for i, track in enumerate(picture.tracks):
        y = TOP + i * ROW
        role = f"({track.role})" if track.role else ""
        out.append(f'<text x="8" y="{y + 16}">{_esc(track.machine)}<tspan fill="#737373" dx="4">{_esc(role)}'
                   '</tspan></text>')
        for s in track.spans:
            x0, x1 = x(s.start), x(s.end)
            out.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1):.1f}" height="{ROW - 8}" '
                       f'fill="{COLOURS.get(s.state, "#d9d9d9")}"><title>{_esc(track.machine)}: {s.state} '
                       f'{_clock(s.start - picture.start)}–{_clock(s.end - picture.start)}</title></rect>')
        if track.deleted is not None:
            xd = x(track.deleted)
            out.append(f'<text x="{xd + 3:.1f}" y="{y + 16}" fill="#737373">deleted</text>')
    labels: dict[int, float] = {}
    for mark in picture.marks:
        row = rows.get(mark.machine or "")
        y = TOP + (row if row is not None else 0) * ROW
        xm = x(mark.at)
        tip = f"<title>{_esc(mark.label)} at {_clock(mark.at - picture.start)}</title>"
        if mark.kind == "stall":
            x0 = x(mark.since if mark.since is not None else mark.at)
            out.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(xm - x0, 1):.1f}" height="{ROW - 4}" '
                       f'fill="url(#stall)" stroke="#636363">{tip}</rect>')
            continue
        colour = MARK_COLOURS.get(mark.kind, "#000000")
        if mark.kind == "remediation":
            out.append(f'<path d="M{xm:.1f},{y + 3} l6,9 l-6,9 l-6,-9 z" fill="{colour}">{tip}</path>')
        else:
            out.append(f'<circle cx="{xm:.1f}" cy="{y + ROW / 2}" r="5" fill="none" stroke="{colour}" '
                       f'stroke-width="2.5">{tip}</circle>')
        # the words go in the right margin on the mark's row (stacked when a row has several)
        key = row if row is not None else -1
        offset = labels.get(key, 0.0)
        labels[key] = offset + 11
        out.append(f'<text x="{LABEL_WIDTH + plot + 8}" y="{y + 10 + offset:.1f}" font-size="10" fill="{colour}">'
                   f'{_esc(mark.label)} ({mark.machine or "cluster"}, {_clock(mark.at - picture.start)})</text>')
    step = _step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        xt = x(picture.start + tick)
        out.append(f'<line x1="{xt:.1f}" y1="{bottom}" x2="{xt:.1f}" y2="{bottom + 5}" stroke="#252525"/>')
        out.append(f'<text x="{xt:.1f}" y="{bottom + 17}" text-anchor="middle" fill="#525252">{_clock(tick)}</text>')
        tick += step
    out.append(f'<line x1="{LABEL_WIDTH}" y1="{bottom}" x2="{LABEL_WIDTH + plot}" y2="{bottom}" stroke="#252525"/>')
    legend_y, lx = bottom + 40, 8.0
    for state in STATES:
        out.append(f'<rect x="{lx:.0f}" y="{legend_y - 10}" width="14" height="12" fill="{COLOURS[state]}"/>'
                   f'<text x="{lx + 18:.0f}" y="{legend_y}">{state}</text>')
        lx += 30 + 7 * len(state)
    out.append(f'<rect x="{lx:.0f}" y="{legend_y - 10}" width="14" height="12" fill="url(#stall)" stroke="#636363"/>'
               f'<text x="{lx + 18:.0f}" y="{legend_y}">stalled</text>')
    lx += 80
    out.append(f'<path d="M{lx + 6:.0f},{legend_y - 11} l6,7 l-6,7 l-6,-7 z" fill="{MARK_COLOURS["remediation"]}"/>'
               f'<text x="{lx + 18:.0f}" y="{legend_y}">remediation</text>')
    lx += 110
    out.append(f'<circle cx="{lx + 6:.0f}" cy="{legend_y - 4}" r="5" fill="none" stroke="{MARK_COLOURS["reboot"]}" '
               f'stroke-width="2.5"/><text x="{lx + 18:.0f}" y="{legend_y}">reboot</text>')
    lx += 80
    out.append(f'<text x="{lx:.0f}" y="{legend_y}" fill="#525252">shaded: phases (green succeeded, red failed)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
