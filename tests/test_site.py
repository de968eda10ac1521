"""The static site (``arnas-zoo site``): offline, the same data as the markdown, and tested in a real browser.

The browser test drives Debian's headless Chromium through Selenium: the page loads with no console
error, a click on a column header sorts the rows, the filters hide rows, every card link opens a card
of the right model and the plots load. It skips with a reason where Chromium or its driver is missing;
``.ci/run`` installs both and sets ``ARNAS_ZOO_REQUIRE_BROWSER=1`` so that CI fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from arnas_zoo.cli import main
from arnas_zoo.leaderboard import BOARDS, rows
from arnas_zoo.pretrained import get_pretrained, list_pretrained


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.refs.append(value)


def _refs(path: Path) -> list[str]:
    parser = _Links()
    parser.feed(path.read_text())
    return parser.refs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = CliRunner().invoke(main, ["site", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_site_is_offline_and_every_link_resolves(site: Path) -> None:
    pages = [site / "index.html", *sorted((site / "cards").glob("*.html"))]
    assert len(pages) == 1 + len(list_pretrained())
    for page in pages:
        for ref in _refs(page):
            assert not re.match(r"^(https?:)?//", ref), f"{page.name} fetches {ref} (no CDN, no network)"
            if ref.startswith(("#", "data:")):
                continue
            assert (page.parent / ref.split("#")[0]).is_file(), f"{page.name}: broken link {ref}"


def test_site_holds_the_same_data_as_the_markdown(site: Path) -> None:
    index = (site / "index.html").read_text()
    for spec in list_pretrained():  # every zoo row, its figures from the pinned metrics.json
        figures = spec.figures()
        assert figures is not None
        row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*>{re.escape(spec.name)}</a>(?:(?!</tr>).)*</tr>", index, re.S)
        assert row is not None, spec.name
        assert f'data-value="{figures.clean}"' in row.group(0) and f'data-value="{spec.params}"' in row.group(0)
    for name, board in BOARDS.items():  # every board row of leaderboard.rows, as in docs/leaderboard*.md
        table = rows(board, site / "no-run-folder")
        section = index.split(f'id="board-{name}"')[1].split("<h2")[0]
        assert section.split("<tbody>")[1].count("<tr>") == len(table)
        for row_data in table:
            assert f">{row_data['arch']}</td>" in section
        if table:
            assert (site / "img" / f"leaderboard_{name}.png").stat().st_size > 1000


def test_card_pages_carry_figures_and_protocol(site: Path) -> None:
    name = "resnet18.cifar10_linf_cpu_w16_mix_e18"
    page = (site / "cards" / f"{name}.html").read_text()
    metrics = json.loads((get_pretrained(name).bundled_path() / "metrics.json").read_text())
    assert f"<h1>{name}</h1>" in page and "Selection: epoch" in page and "selection bias possible" in page
    assert f"{100 * metrics['clean_accuracy']:.1f}%" in page and "95% interval" in page
    assert page.count("<li><code>") == len(metrics["sanity_checks"])  # every sanity check with its detail


# ---- a real browser ---------------------------------------------------------------------------------
def _browser() -> Iterator[object]:
    required = os.environ.get("ARNAS_ZOO_REQUIRE_BROWSER") == "1"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None  # type: ignore[assignment]
    if webdriver is None or chromium is None or driver_path is None:
        reason = "headless Chromium, chromedriver and selenium needed (apt-get install chromium chromium-driver)"
        if required:
            pytest.fail(f"ARNAS_ZOO_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


browser = pytest.fixture(scope="module")(_browser)


def _visible_values(driver: object, table_id: str, column: int) -> list[str]:
    script = (
        f"return Array.from(document.getElementById('{table_id}').tBodies[0].rows).filter(r => !r.hidden)"
        f".map(r => r.cells[{column}].getAttribute('data-value') ?? r.cells[{column}].textContent)"
    )
    return driver.execute_script(script)  # type: ignore[attr-defined,no-any-return]


def _header(driver: object, table_id: str, label: str) -> object:
    for th in driver.find_elements("css selector", f"#{table_id} thead th"):  # type: ignore[attr-defined]
        if th.text.replace("\n", " ").startswith(label):
            return th
    raise AssertionError(f"no column {label!r} in #{table_id}")


def _severe(driver: object) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]


def test_page_sorts_filters_and_links_in_a_real_browser(site: Path, browser: object) -> None:
    driver = browser
    driver.get((site / "index.html").as_uri())  # type: ignore[attr-defined]
    assert _severe(driver) == []
    current = [s for s in list_pretrained() if not s.superseded_by]
    count = driver.find_element("css selector", '[data-count="zoo-table"]')  # type: ignore[attr-defined]
    assert count.text == f"{len(current)} of {len(list_pretrained())} shown"  # superseded hidden at first

    _header(driver, "zoo-table", "AutoAttack").click()
    values = [float(v) for v in _visible_values(driver, "zoo-table", 5) if v != ""]
    assert len(values) >= 2 and values == sorted(values, reverse=True)
    _header(driver, "zoo-table", "AutoAttack").click()  # again: the other way
    values = [float(v) for v in _visible_values(driver, "zoo-table", 5) if v != ""]
    assert values == sorted(values)
    _header(driver, "zoo-table", "params").click()  # sizes: smallest first
    params = [int(v) for v in _visible_values(driver, "zoo-table", 8)]
    assert params == sorted(params)

    box = driver.find_element("css selector", '[data-filter="zoo-table"]')  # type: ignore[attr-defined]
    box.send_keys("resnet")
    names = _visible_values(driver, "zoo-table", 0)
    assert names and all("resnet" in n for n in names)
    assert len(names) == sum("resnet" in s.name for s in current)
    box.clear()
    box.send_keys(" ")  # an input event with an empty query shows every current row again
    driver.find_element("css selector", '[data-superseded="zoo-table"]').click()  # type: ignore[attr-defined]
    assert len(_visible_values(driver, "zoo-table", 0)) == len(list_pretrained())
    select = driver.find_element("css selector", '[data-dataset="zoo-table"]')  # type: ignore[attr-defined]
    select.find_element("css selector", 'option[value="mnist"]').click()
    names = _visible_values(driver, "zoo-table", 0)
    assert names and all(get_pretrained(n).dataset == "mnist" for n in names)

    board = "board-cifar10-table"
    _header(driver, board, "clean").click()
    clean = [float(v) for v in _visible_values(driver, board, 4)]
    assert clean == sorted(clean, reverse=True)
    plots = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
    )
    assert plots and all(done and width > 0 for done, width in plots)
    assert _severe(driver) == []

    hrefs = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('a.card-link')).map(a => [a.href, a.textContent])"
    )
    assert {name for _, name in hrefs} == {s.name for s in list_pretrained()}
    for href, name in dict(hrefs).items():
        driver.get(href)  # type: ignore[attr-defined]
        assert driver.find_element("tag name", "h1").text == name  # type: ignore[attr-defined]
        assert _severe(driver) == [], name
