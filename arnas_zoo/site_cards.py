"""One page per zoo model for the static site (:mod:`arnas_zoo.site`): the model card as HTML.

Made from the same records as ``MODEL_CARD.md`` and ``arnas-zoo export card``: the registry entry, the
pinned ``config.json`` and ``metrics.json`` (:mod:`arnas_zoo.figures`); each figure with its attack
settings and 95% interval, the data and selection protocol in one line each, every sanity check with
what it measured.
"""

from __future__ import annotations

import html
import json
from typing import Any

from arnas_zoo.checkpoint import read_config
from arnas_zoo.figures import Figures, attack_label, wilson_interval
from arnas_zoo.figures import eps_text as _eps
from arnas_zoo.pretrained import PretrainedSpec


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _figure_rows(figures: Figures) -> list[str]:
    def row(name: str, n: int, eps: str, steps: Any, restarts: Any, value: float) -> str:
        low, high = wilson_interval(value, n)
        cells = [name, n, eps, "-" if steps is None else steps, "-" if restarts is None else restarts]
        tds = "".join(f"<td{' class=num' if i else ''}>{_e(c)}</td>" for i, c in enumerate(cells))
        return f'{tds}<td class="num">{100 * value:.1f}%</td><td class="num">{100 * low:.1f}-{100 * high:.1f}</td>'

    rows = [row("clean", figures.n, "-", None, None, figures.clean)]
    for a in figures.attacks:
        rows.append(
            row(attack_label(a.attack), a.n, f"{a.norm or ''} {_eps(a.eps)}".strip(), a.steps, a.restarts, a.accuracy)
        )
    rows.append(row("worst case over all attacks (per point)", figures.n, "-", None, None, figures.worst_case))
    return [f"<tr>{r}</tr>" for r in rows]


def _checks(metrics: dict[str, Any]) -> str:
    items = []
    for check in metrics.get("sanity_checks") or []:
        if not isinstance(check, dict):
            continue
        passed = check.get("passed")
        verdict = (
            '<span class="ok">passed</span>'
            if passed
            else '<span class="fail">FAILED</span>'
            if passed is False
            else "not run"
        )
        items.append(f"<li><code>{_e(check.get('name'))}</code>: {verdict}, {_e(check.get('detail', ''))}</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No sanity checks were run on these figures.</p>"


def card_page(spec: PretrainedSpec) -> str:
    """The body of ``cards/NAME.html``."""
    parts = [f"<h1>{_e(spec.name)}</h1>", f"<p>{_e(spec.description or '(no description)')}</p>"]
    if spec.superseded_by:
        parts.append(
            f'<p class="note">Superseded by <a href="{_e(spec.superseded_by)}.html">{_e(spec.superseded_by)}</a>.</p>'
        )
    parts.append(
        "<pre><code>import arnas_zoo\n"
        f'model = arnas_zoo.load("{_e(spec.name)}")  # eval mode; inputs in [0, 1], normalization inside\n'
        "logits = model(images)</code></pre>"
    )
    figures = spec.figures()
    metrics: dict[str, Any] = {}
    if spec.folder is not None and (spec.bundled_path() / "metrics.json").is_file():
        metrics = json.loads((spec.bundled_path() / "metrics.json").read_text())
    parts.append("<h2>Evaluation</h2>")
    if figures is None:
        parts.append("<p>No evaluation is recorded: the robustness of these weights is unknown.</p>")
    else:
        parts += [
            f"<ul><li>Data: {_e(figures.data_line)}; seed {_e(figures.seed)}.</li>",
            f"<li>Selection: {_e(figures.selection_line)}.</li>",
            "<li>Robust accuracy counts a point only if it is classified correctly on the clean input and on the "
            "attack's adversarial input; the interval is the 95% Wilson interval over the n points.</li></ul>",
            '<table class="figures"><thead><tr><th>evaluation</th><th class="num">n</th><th class="num">eps</th>'
            '<th class="num">steps</th><th class="num">restarts</th><th class="num">accuracy</th>'
            '<th class="num">95% interval</th></tr></thead><tbody>',
            *_figure_rows(figures),
            "</tbody></table>",
            "<h3>Sanity checks against gradient masking</h3>",
            _checks(metrics),
        ]
    parts.append("<h2>Architecture and files</h2>")
    facts = [
        ("architecture", spec.arch),
        ("trained on", f"{spec.dataset}" + (f" ({spec.data})" if spec.data else "")),
        ("threat model", f"{spec.threat_model}, eps {_eps(spec.eps)}"),
        ("parameters", "-" if spec.params is None else f"{spec.params:,}"),
        ("MACs per image", "-" if spec.macs is None else f"{spec.macs:,}"),
        ("source", spec.source),
        ("license", spec.license),
        *((f"sha256 of {name}", digest) for name, digest in spec.pins().items()),
    ]
    genotype = ""
    if spec.folder is not None:
        config = read_config(spec.bundled_path())
        facts.insert(
            1, ("input", f"{config.in_channels} x {config.input_size} x {config.input_size}, pixels in [0, 1]")
        )
        if config.genotype is not None:
            facts.insert(
                2, ("cells", f"{config.layers}, C={config.init_channels}, placement {'-'.join(config.placement)}")
            )
            genotype = f"<h3>Genotype</h3><pre>{_e(config.genotype.pretty())}</pre>"
    parts.append(
        "<table><tbody>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts) + "</tbody></table>"
    )
    parts.append(genotype)
    return "\n".join(p for p in parts if p)
