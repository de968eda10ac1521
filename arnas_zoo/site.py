"""The zoo and its leaderboards as a static web site: sortable, filterable, offline (``arnas-zoo site``).

:func:`build_site` writes a folder that works from ``file://`` with no server and no network: one
``index.html`` (the zoo table and every board, with their plots), one page per model under ``cards/``
and the plots under ``img/``. Styles and scripts are inline; nothing is fetched from a CDN. The pages
are generated from the same data as the markdown: the pretrained registry with each model's pinned
``metrics.json`` (:mod:`arnas_zoo.figures`, as ``MODEL_CARD.md`` and ``arnas-zoo pretrained``) and the
leaderboard rows of :func:`arnas_zoo.leaderboard.rows` (as ``docs/leaderboard*.md``).

Sorting and filtering run in the page (a small script, no library): a click on a column header sorts
by that column (accuracies best first, again for the other way), the search box hides rows that do
not contain its text, and the zoo table has a dataset filter and a switch for superseded models.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from arnas_zoo._version import __version__
from arnas_zoo.figures import Figures, wilson_interval
from arnas_zoo.figures import count as _count
from arnas_zoo.figures import eps_text as _eps
from arnas_zoo.figures import percent as _pct
from arnas_zoo.pretrained import PretrainedSpec, list_pretrained

CARDS_DIR = "cards"
IMG_DIR = "img"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:78rem;padding:0 1rem;
color:#1f2328;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;font-size:.88rem;margin:.6rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f6f8fa;position:sticky;top:0}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th:hover{background:#eaeef2}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.superseded td{color:#6e7781}
.controls{display:flex;gap:1rem;align-items:center;flex-wrap:wrap;margin:.5rem 0}
.controls input[type=search]{padding:.3rem .5rem;min-width:16rem}
.count{color:#57606a;font-size:.85rem}.fail{color:#cf222e;font-weight:600}.ok{color:#1a7f37}
.note{color:#57606a;font-size:.88rem}ul.notes{font-size:.88rem;color:#444c56}
img.plot{max-width:100%;border:1px solid #d0d7de}code,pre{background:#f6f8fa;border-radius:4px}
pre{padding:.6rem;overflow-x:auto;font-size:.82rem}
"""

SCRIPT = """
(function(){
  function value(row, col){
    var cell = row.cells[col], v = cell.getAttribute('data-value');
    if (v === null) return cell.textContent.trim().toLowerCase();
    if (v === '') return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(table, col, th){
    var now = th.getAttribute('aria-sort');
    var dir = now === 'descending' ? 'ascending' : now === 'ascending' ? 'descending'
              : (th.getAttribute('data-first') || 'descending');
    Array.prototype.forEach.call(th.parentNode.cells, function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), sign = dir === 'ascending' ? 1 : -1;
    rows.forEach(function(r, i){ r._order = i; });
    rows.sort(function(a, b){
      var x = value(a, col), y = value(b, col);
      if (x === null || y === null) return (x === null) - (y === null) || a._order - b._order;
      return (x < y ? -sign : x > y ? sign : 0) || a._order - b._order;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  function filter(table){
    var box = document.querySelector('[data-filter="' + table.id + '"]');
    var text = box ? box.value.trim().toLowerCase() : '';
    var select = document.querySelector('[data-dataset="' + table.id + '"]');
    var dataset = select ? select.value : '';
    var toggle = document.querySelector('[data-superseded="' + table.id + '"]');
    var showOld = toggle ? toggle.checked : true, shown = 0, rows = table.tBodies[0].rows;
    Array.prototype.forEach.call(rows, function(r){
      var hide = (text && r.textContent.toLowerCase().indexOf(text) < 0)
              || (dataset && r.getAttribute('data-dataset') !== dataset)
              || (!showOld && r.classList.contains('superseded'));
      r.hidden = !!hide;
      if (!hide) shown += 1;
    });
    var count = document.querySelector('[data-count="' + table.id + '"]');
    if (count) count.textContent = shown + ' of ' + rows.length + ' shown';
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, col){
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, col, th); });
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' '){ e.preventDefault(); sortBy(table, col, th); }
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll(
      '[data-filter="' + table.id + '"],[data-dataset="' + table.id + '"],[data-superseded="' + table.id + '"]'),
      function(control){ control.addEventListener('input', function(){ filter(table); });
                         control.addEventListener('change', function(){ filter(table); }); });
    filter(table);
  });
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _td(text: str, value: Any = None, num: bool = False, raw: bool = False) -> str:
    """A cell; ``value`` (number or text, '' for missing) is what the column sorts by."""
    attrs = ' class="num"' if num else ""
    if value is not None:
        attrs += f' data-value="{_e(value)}"'
    return f"<td{attrs}>{text if raw else _e(text)}</td>"


def _th(label: str, num: bool = False, first: str = "descending", title: str = "") -> str:
    attrs = (' class="num"' if num else "") + f' data-first="{first}"' + (f' title="{_e(title)}"' if title else "")
    return f"<th{attrs}>{_e(label)}</th>"


def _interval_cell(p: float | None, n: int | None) -> str:
    if p is None or not n:
        return _td("-", "", num=True)
    low, high = wilson_interval(p, n)
    return _td(f"{_pct(p)} ({_pct(low)}-{_pct(high)})", round(100 * p, 3), num=True)


def _checks_cell(figures: Figures | None) -> str:
    if figures is None or not figures.checks_run:
        return _td("none run", "")
    if figures.checks_failed:
        return _td(f'<span class="fail">FAILED: {_e(", ".join(figures.checks_failed))}</span>', 0, raw=True)
    return _td(f'<span class="ok">{figures.checks_run} ok</span>', 1, raw=True)


def card_href(name: str) -> str:
    return f"{CARDS_DIR}/{name}.html"


def _zoo_rows(specs: Sequence[PretrainedSpec]) -> list[str]:
    rows = []
    for spec in specs:
        f = spec.figures()
        clean = None if f is None else f.clean
        autoattack = None if f is None else f.autoattack
        link = f'<a class="card-link" href="{_e(card_href(spec.name))}">{_e(spec.name)}</a>'
        if spec.superseded_by:
            link += ' <span class="note">(superseded)</span>'
        cells = [
            _td(link, spec.name, raw=True),
            _td(spec.arch),
            _td(spec.dataset),
            _td(f"{spec.threat_model} {_eps(spec.eps)}", spec.eps, num=True),
            _td(_pct(clean), "" if clean is None else clean, num=True),
            _td(_pct(autoattack), "" if autoattack is None else autoattack, num=True),
            _interval_cell(None if f is None else f.worst_case, None if f is None else f.n),
            _td("-" if f is None else str(f.n), "" if f is None else f.n, num=True),
            _td(_count(spec.params), "" if spec.params is None else spec.params, num=True),
            _td(_count(spec.macs), "" if spec.macs is None else spec.macs, num=True),
            _checks_cell(f),
        ]
        css = ' class="superseded"' if spec.superseded_by else ""
        rows.append(f'<tr{css} data-dataset="{_e(spec.dataset)}">{"".join(cells)}</tr>')
    return rows


def zoo_section(specs: Sequence[PretrainedSpec]) -> str:
    datasets = sorted({s.dataset for s in specs})
    options = "".join(f'<option value="{_e(d)}">{_e(d)}</option>' for d in datasets)
    head = "".join(
        [
            _th("model", first="ascending"),
            _th("architecture", first="ascending"),
            _th("data", first="ascending"),
            _th("threat, eps", num=True),
            _th("clean %", num=True),
            _th("AutoAttack %", num=True, title="AutoAttack, standard version, reference implementation"),
            _th("worst case % (95% interval)", num=True, title="a point counts only if it survives every attack"),
            _th("n", num=True, title="evaluation points"),
            _th("params", num=True, first="ascending"),
            _th("MACs", num=True, first="ascending"),
            _th("sanity checks"),
        ]
    )
    return f"""<h2 id="zoo">The zoo</h2>
<p class="note">Every pretrained model that <code>arnas_zoo.load(NAME)</code> finds, each pinned by sha256.
Click a column to sort (again to reverse), type to filter. Accuracy in %; worst case: a point counts only if it
survives every attack, with its 95% Wilson interval over n points. Each name opens the model's card.</p>
<div class="controls">
<input type="search" placeholder="filter models, e.g. resnet" data-filter="zoo-table" aria-label="filter models">
<label>dataset <select data-dataset="zoo-table"><option value="">all</option>{options}</select></label>
<label><input type="checkbox" data-superseded="zoo-table"> show superseded</label>
<span class="count" data-count="zoo-table"></span>
</div>
<table class="sortable" id="zoo-table"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(_zoo_rows(specs))}
</tbody></table>"""


def board_section(name: str, board: Any, table: Sequence[dict[str, Any]], plot: str | None) -> str:
    """One leaderboard: its settings, its rows (sortable, filterable) and its plot."""
    attacks = list(board.attacks)
    head = "".join(
        [
            _th("architecture", first="ascending"),
            _th("size", first="ascending"),
            _th("params", num=True, first="ascending"),
            _th("MMACs", num=True, first="ascending"),
            _th("clean %", num=True),
            *(_th(f"{a} %", num=True) for a in attacks),
            _th("worst case % (95% interval)", num=True),
            _th("best epoch", num=True),
            _th("train min", num=True, first="ascending"),
            _th("sanity checks"),
            _th("weights", first="ascending"),
        ]
    )
    body = []
    for row in table:
        size = ", ".join(f"{k}={v}" for k, v in row["size"].items() if k != "cell_types")
        failed = row["checks_failed"]
        checks = (
            _td(f'<span class="fail">FAILED: {_e(", ".join(failed))}</span>', 0, raw=True)
            if failed
            else _td('<span class="ok">ok</span>', 1, raw=True)
        )
        weights = row.get("weights")
        link = (
            f'<a class="card-link" href="{_e(card_href(weights))}">{_e(weights)}</a>' if weights else "run folder only"
        )
        minutes = row.get("train_minutes")
        cells = [
            _td(row["arch"]),
            _td(size),
            _td(f"{row['params']:,}", row["params"], num=True),
            _td(f"{row['macs'] / 1e6:.2f}", row["macs"], num=True),
            _td(_pct(row["clean"]), row["clean"], num=True),
            *(_td(_pct(row.get(a)), "" if row.get(a) is None else row[a], num=True) for a in attacks),
            _interval_cell(row["worst_case"], row["n"]),
            _td(row["epoch"], "" if row["epoch"] is None else row["epoch"], num=True),
            _td("-" if minutes is None else f"{minutes:.0f}", "" if minutes is None else minutes, num=True),
            checks,
            _td(link, weights or "", raw=True),
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    table_id = f"board-{name}-table"
    plot_html = f'<p><img class="plot" src="{_e(plot)}" alt="{_e(name)} leaderboard plot"></p>' if plot else ""
    return f"""<h2 id="board-{_e(name)}">Leaderboard: {_e(name)}</h2>
<ul class="notes">
<li>Every architecture trained from scratch by one recipe and budget at one reduced size:
<code>{_e(board.dataset)}</code> split <code>{_e(board.train_split)}</code> (last 1,000 rows held out for epoch
selection), recipe <code>{_e(board.recipe)}</code>, seed {board.seed}.
<strong>Reduced-scale figures: ranks may differ from the papers'.</strong></li>
<li>Evaluation: the first {board.eval_n} evaluation points, l_inf eps {_e(_eps(board.eps))},
attacks {_e(", ".join(attacks))} (PGD: step eps/4, random start, 1 restart; aa: the reference AutoAttack,
standard version).</li>
<li>Rows whose 95% intervals overlap are not ranked apart by this evaluation.</li>
</ul>
<div class="controls">
<input type="search" placeholder="filter rows" data-filter="{table_id}" aria-label="filter {_e(name)}">
<span class="count" data-count="{table_id}"></span></div>
<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
{plot_html}"""


def page(title: str, body: str, root: str = "") -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body>
{body}
<p class="note">Generated by arnas-zoo {_e(__version__)} (<code>arnas-zoo site</code>) from the pretrained registry and
each model's pinned metrics.json. <a href="{root}index.html">Zoo and leaderboards</a>.</p>
<script>{SCRIPT}</script>
</body></html>
"""


def _boards(run_root: Path | None, plots: Path) -> Iterable[tuple[str, str, str]]:
    """``(anchor, title, html)`` of every leaderboard, its plot written into ``plots``."""
    from arnas_zoo.leaderboard import BOARDS, plot_table, rows

    for name, board in BOARDS.items():
        run_dir = (run_root / f"leaderboard-{name}") if run_root is not None else plots / f".no-run-{name}"
        table = rows(board, run_dir)
        plot = None
        if table:
            path = plot_table(table, plots / f"leaderboard_{name}.png", f"{name} leaderboard (reduced scale)")
            plot = f"{IMG_DIR}/{path.name}"
        yield f"board-{name}", f"leaderboard: {name}", board_section(name, board, table, plot)


def build_site(out: str | Path, run_root: str | Path | None = None, *, boards: bool = True) -> Path:
    """Write the site into ``out`` (created; files of an earlier site are replaced); return ``index.html``.

    ``run_root`` holds the leaderboard run folders (``leaderboard-BOARD``; default: none, so every
    board row comes from the zoo). ``boards=False`` leaves the leaderboards (and matplotlib) out.
    """
    from arnas_zoo.atomic import atomic_write_text
    from arnas_zoo.site_cards import card_page

    out = Path(out)
    (out / CARDS_DIR).mkdir(parents=True, exist_ok=True)
    (out / IMG_DIR).mkdir(parents=True, exist_ok=True)
    specs = list_pretrained()
    sections = [("zoo", "zoo", zoo_section(specs))]
    if boards:
        sections += list(_boards(Path(run_root) if run_root is not None else None, out / IMG_DIR))
    nav = " &middot; ".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title, _ in sections)
    intro = (
        "<h1>arnas-zoo: robust models and leaderboards</h1>"
        "<p>Adversarially trained image classifiers whose architectures come from neural architecture search "
        "(ARNAS and its peers), with every figure's protocol. Load any of them with "
        "<code>arnas_zoo.load(NAME)</code>.</p>"
        f"<p>{nav}</p>"
    )
    index = out / "index.html"
    body = intro + "\n".join(section for _, _, section in sections)
    atomic_write_text(index, page("arnas-zoo: robust models and leaderboards", body))
    for spec in specs:
        atomic_write_text(out / card_href(spec.name), page(spec.name, card_page(spec), root="../"))
    return index
