"""The pieces every page is made of: escaping (with redaction), the layout, numbers, bars.

Pure functions returning strings.  Every text that reaches a page goes through ``esc``,
which redacts secrets (spool.redact, as the sinks do) before HTML-escaping, so a page
can never show what a sink would not send.
"""
from __future__ import annotations

import html
from datetime import datetime
from typing import Any, Iterable, Sequence
from urllib.parse import urlencode

from ..redact import redact_text

CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d232a;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header b{margin-right:12px}
main{padding:16px;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.mono{font-family:ui-monospace,monospace;font-size:12px}
.err{color:#b3261e;font-weight:600}.ok{color:#1e7b34}.muted{color:#6b7480}
form.filters{display:flex;gap:8px;margin-bottom:12px;flex-wrap:wrap}
form.filters input,form.filters select{padding:3px 6px}
.pager{margin:12px 0}.card{background:#fff;padding:12px;margin-bottom:12px;border:1px solid #e3e6ea}
.tl{background:#fff;border:1px solid #e3e6ea}
.tl details{border-bottom:1px solid #eef0f3}
.tl summary{display:grid;grid-template-columns:320px 1fr 250px;gap:8px;padding:3px 8px;cursor:pointer;list-style:none}
.tl summary::-webkit-details-marker{display:none}
.tl .lbl{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tl .axis{position:relative;height:18px;background:repeating-linear-gradient(90deg,#fff 0,#fff 9.9%,#eef0f3 10%)}
.tl .bar{position:absolute;top:3px;height:12px;min-width:2px;border-radius:2px;background:#8a96a3}
.tl .model_request .bar{background:#3b7ddd}.tl .tool_use .bar{background:#2e9b57}
.tl .user_prompt .bar{background:#a77bd8}.tl .failed .bar{background:#d93025}
.tl .failed summary{background:#fdecea}.tl .failed .lbl{color:#b3261e;font-weight:600}
.tl .meta{font-size:12px;color:#4b5563;text-align:right;white-space:nowrap}
.tl .body{padding:6px 12px 10px 24px;background:#fafbfc}
.tl pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;background:#f1f3f5;padding:6px;font-size:12px}
.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:12px;height:10px;margin-right:4px}
svg text{font-size:11px;fill:#1d232a}
"""

# Clicking a timeline row opens its <details>; "expand all" opens every one.
JS = """
function spoolToggle(open){document.querySelectorAll('.tl details').forEach(d=>d.open=open)}
"""

NAV = (("", "Sessions"), ("usage", "Usage"), ("delivery", "Delivery"))


def esc(value: Any) -> str:
    """Redacted, HTML-escaped text ('' for None)."""
    if value is None:
        return ""
    return html.escape(redact_text(str(value)), quote=True)


def when(ts: float | None) -> str:
    """Epoch seconds as local 'YYYY-MM-DD HH:MM:SS'."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def num(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, (int, float)) and not isinstance(n, bool) else ""


def usd(v: Any) -> str:
    if v is None:
        return "—"
    return f"${v:,.4f}" if v < 10 else f"${v:,.2f}"


def duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def href(path: str, **query: Any) -> str:
    """A link relative to the page's <base> (which carries the token)."""
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return esc(path + ("?" + urlencode(q) if q else "")) or "./"


def table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = (),
          attrs: str = "") -> str:
    """An HTML table; cells are already HTML.  ``numeric``: right-aligned columns."""
    nums = set(numeric)
    th = "".join(f'<th{" class=n" if i in nums else ""}>{esc(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in nums else ""}>{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table {attrs}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def bars(items: Sequence[tuple[str, float]], *, unit: str = "", width: int = 900,
         fmt=num) -> str:
    """A horizontal bar chart as inline SVG: one labelled bar per (label, value)."""
    if not items:
        return '<p class="muted">No data.</p>'
    top = max(v for _, v in items) or 1
    row, label_w, pad = 20, 150, 90
    h = row * len(items) + 4
    out = [f'<svg role="img" width="{width}" height="{h}" viewBox="0 0 {width} {h}">']
    for i, (label, v) in enumerate(items):
        y = i * row + 2
        w = max(1.0, (width - label_w - pad) * v / top)
        out.append(f'<text x="0" y="{y + 13}">{esc(label)}</text>'
                   f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
                   f'fill="#3b7ddd"><title>{esc(label)}: {esc(fmt(v))}{esc(unit)}</title></rect>'
                   f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{esc(fmt(v))}{esc(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def layout(title: str, body: str, *, base: str | None = None, nav: bool = True) -> str:
    """A whole page.  ``base``: the token prefix every relative link resolves against
    (None for a standalone export, which links nowhere)."""
    head_base = f'<base href="{esc(base)}">' if base is not None else ""
    links = "".join(f'<a href="{href(p)}">{esc(n)}</a>' for p, n in NAV) if nav else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="referrer" content="no-referrer">'
            f"{head_base}<title>{esc(title)} — spool</title><style>{CSS}</style>"
            f"<script>{JS}</script></head><body><header><b>spool</b>{links}</header>"
            f"<main><h1>{esc(title)}</h1>{body}</main></body></html>")
