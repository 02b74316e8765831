"""``report.html``: one self-contained page, thumbnails grouped by check, readable offline.

Like the audit's report, every image is embedded (base64 JPEG) with its style: the page
opens from disk or a mail attachment with no network and nothing beside it.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from xcyto.data.health._registry import CHECKS

THUMB = 96
SHOWN_PER_CHECK = 60

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd}
.muted{color:#666;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} th{background:#f4f4f4}
td.n{text-align:right} .grid{display:flex;flex-wrap:wrap;gap:8px}
.card{width:152px;font-size:11px;line-height:1.25} .card img{width:96px;height:96px;object-fit:contain;
background:#eee;display:block;border:1px solid #ccc} .card .p{word-break:break-all;color:#444}
.blocking{color:#a00;font-weight:600}
"""


def render(result, images=None) -> str:
    """The page for a :class:`xcyto.data.health.DataCheck`; ``images``: the crops, in order
    (read from their files when not given)."""
    counts = result.counts()
    total = len(result)
    rows = []
    for name, count in counts.items():
        check = CHECKS[name]
        rows.append(f"<tr><td><a href='#{name}'>{html.escape(check.title)}</a>"
                    f"{' <span class=blocking>blocking</span>' if check.blocking else ''}</td>"
                    f"<td><code>{name}</code></td><td class=n>{count}</td><td class=n>{count / max(total, 1):.1%}</td>"
                    f"<td>{'&lt;' if check.flag_when == 'below' else '&ge;'} {check.threshold:.3g}</td>"
                    f"<td class=muted>{html.escape(check.description)}</td></tr>")
    class_rows = []
    flagged_names = [name for name, count in counts.items() if count]
    for label, class_name in enumerate(result.classes):
        members = int((result.labels == label).sum())
        cells = "".join(f"<td class=n>{sum(1 for i in result.issues if i.check == name and result.labels[i.index] == label)}</td>"
                        for name in flagged_names)
        class_rows.append(f"<tr><td>{html.escape(class_name)}</td><td class=n>{members}</td>{cells}</tr>")
    sections = []
    for name in flagged_names:
        issues = [issue for issue in result.issues if issue.check == name]
        same_reason = len({issue.reason for issue in issues}) == 1  # said once, above the cards
        cards = []
        for issue in issues[:SHOWN_PER_CHECK]:
            image = images[issue.index] if images is not None else _read(result.files[issue.index])
            label = result.classes[result.labels[issue.index]] if len(result.classes) else ""
            cards.append(f"<div class=card title='{html.escape(issue.reason, quote=True)}'>"
                         f"<img alt='' src='{_thumbnail(image)}'><div class=p>{html.escape(issue.path)}</div>"
                         f"<div>{html.escape(label)} &middot; score {issue.score:.3g}</div>"
                         + ("" if same_reason else f"<div class=muted>{html.escape(issue.reason)}</div>") + "</div>")
        more = (f"<p class=muted>and {len(issues) - SHOWN_PER_CHECK} more: every one is in issues.csv</p>"
                if len(issues) > SHOWN_PER_CHECK else "")
        check = CHECKS[name]
        said = f"<p><b>{html.escape(issues[0].reason[0].upper() + issues[0].reason[1:])}.</b></p>" if same_reason else ""
        sections.append(f"<h2 id='{name}'>{html.escape(check.title)} ({len(issues)})</h2>{said}"
                        f"<p class=muted>Measured: {html.escape(check.description)}.</p>"
                        f"<div class=grid>{''.join(cards)}</div>{more}")
    settings = result.settings
    pairs_note = ""
    if result.pairs:
        pairs_note = f"<p>{len(result.pairs)} duplicate pairs (all in <code>summary.json</code>).</p>"
    class_table = ""
    if flagged_names:
        heads = "".join(f"<th>{html.escape(CHECKS[name].title)}</th>" for name in flagged_names)
        class_table = (f"<h2>By class</h2><table><tr><th>class</th><th>crops</th>{heads}</tr>{''.join(class_rows)}"
                       "</table>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>xcyto data check</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<h1>Data check: {html.escape(str(settings.get('data', '')))}</h1>"
            f"<p class=muted>{total} crops; {html.escape(result.health_line())}. "
            f"Checked in {settings.get('seconds', '?')} s by xcyto {html.escape(str(settings.get('xcyto_version', '')))}; "
            "no classifier involved. Each crop's issues and scores: issues.csv and crops.csv.</p>"
            "<table><tr><th>check</th><th>name</th><th>flagged</th><th>share</th><th>flagged when</th>"
            f"<th>what it measures</th></tr>{''.join(rows)}</table>{pairs_note}{class_table}{''.join(sections)}"
            "</body></html>\n")


def _read(path: str) -> np.ndarray:
    from xcyto.data._io import read_image

    try:
        return read_image(path)
    except Exception:  # a file gone since the check: a grey square, not a broken page
        return np.full((THUMB, THUMB, 3), 200, np.uint8)


def _thumbnail(image: np.ndarray) -> str:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image))
    picture.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
