"""The monthly report as people get it: ``lpse-ops report monthly`` over two recorded months writes HTML and
PDF; headless Chromium (Debian's, through chromedriver) opens the HTML, and the PDF's pages are read as
images (``pdftoppm``) and text (``pdftotext``). Checked: the charts are drawn (SVG with content, a real
size on the page, and chart pixels in the PDF), the tables are there, the text is Indonesian (section
titles citing their clauses, month and day names, no English section title) and per-site times are in
the site's own zone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from lpse_ops.backends import chromium
from lpse_ops.main import main
from tests.unit.test_report_monthly import NAMES, NOVEMBER_P1_TITLE, SITES, record_two_months

ENGLISH_TITLES = ("monthly", "summary", "implementation", "progress", "utilisation", "utilization", "disturbance",
                  "incident", "request", "analysis", "work plan", "backup verification", "drills", "audit score",
                  "data sources", "compliance", "report")
"""Words an English section title would have; "Laporan Trend" and "Klausul" are the agreement's own words."""
SECTIONS = ("Ringkasan", "1. Laporan Monitoring", "2. Laporan Trend", "3. Laporan Analisis",
            "4. Pencapaian dan Kepatuhan", "5. Sumber Data")
SITE_LINE = (31, 119, 180)
"""matplotlib's first line colour (site01 in the utilisation chart)."""
BAR = (31, 95, 153)
"""The reports' bar colour (charts.CURRENT_COLOUR)."""


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not installed: bash scripts/setup.sh installs chromium, chromium-driver and "
                "poppler-utils")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two months recorded, then ``lpse-ops report monthly --month 2026-11`` (HTML and PDF) and the compliance
    report for 1-30 November (HTML), with the sites' zones from a real inventory."""
    folder = tmp_path_factory.mktemp("report-render")
    url = f"sqlite:///{folder / 'state.db'}"
    inventory = folder / "hosts.yml"
    inventory.write_text("all:\n  children:\n    sites:\n      hosts:\n" + "".join(
        f"        {host}:\n          site_code: {host}\n          site_timezone: {zone}\n"
        f"          site_name: {NAMES[host]}\n" for host, zone in SITES.items()), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LPSE_OPS_HOME", str(folder / "home"))
        patch.setenv("LPSE_OPS_ACTOR", "tester@control")
        record_two_months(url)
        runner = CliRunner()
        monthly = runner.invoke(main, ["report", "monthly", "--month", "2026-11", "--out", str(folder / "out"),
                                       "--format", "html,pdf", "-i", str(inventory), "--state-url", url, "--json"])
        assert monthly.exit_code == 0, monthly.output
        printed = json.loads(monthly.output)
        assert {row["label"]: row["current"] for row in printed["data"]["trend"]}["Gangguan P1"] == 1
        assert printed["sha256"]["pdf"] == hashlib.sha256(Path(printed["files"]["pdf"]).read_bytes()).hexdigest()
        # no inventory here: the sites' zones come from their incident records
        compliance = runner.invoke(main, ["report", "compliance", "--from", "2026-11-01", "--to", "2026-11-30",
                                          "--out", str(folder / "out"), "--format", "html", "--state-url", url])
        assert compliance.exit_code == 0, compliance.output
    out = folder / "out"
    yield {"html": out / "laporan-bulanan-2026-11.html", "pdf": out / "laporan-bulanan-2026-11.pdf",
           "compliance": out / "laporan-kepatuhan-2026-11-01_2026-11-30.html", "folder": folder}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    profile = tempfile.mkdtemp(prefix="report-test-chromium-")
    for flag in (*chromium.QUIET_FLAGS, f"--user-data-dir={profile}", "--window-size=1000,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_monthly_html_in_chromium_has_charts_tables_indonesian(written: dict[str, Path],
                                                                    browser: webdriver.Chrome) -> None:
    browser.get(written["html"].as_uri())
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "id"
    titles = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "h1, h2, h3")]
    h2 = [element.text for element in browser.find_elements(By.TAG_NAME, "h2")]
    assert [title for title in h2 if title.startswith(SECTIONS)] == h2 and len(h2) == len(SECTIONS), h2
    for wanted in ("Klausul 8.1.1", "Klausul 8.1.2", "Klausul 8.1.3", "Klausul 6.2.16", "Klausul 6.2.17"):
        assert any(wanted in title for title in titles), (wanted, titles)
    for title in titles:
        english = [word for word in ENGLISH_TITLES if word in title.lower()]
        assert not english, f"English in section title {title!r}: {english}"

    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4  # utilisation, trend, drills, audit scores
    for chart in charts:
        box = browser.execute_script("const b = arguments[0].getBoundingClientRect(); return [b.width, b.height];",
                                     chart)
        drawn = len(chart.find_elements(By.CSS_SELECTOR, "path, rect, use"))
        assert box[0] > 400 and box[1] > 100 and drawn > 10, (chart.get_attribute("aria-label"), box, drawn)
    labels = [chart.get_attribute("aria-label") for chart in charts]
    assert any("Oktober 2026 dan November 2026" in label for label in labels), labels

    tables = browser.find_elements(By.CSS_SELECTOR, "table.data")
    assert len(tables) >= 10
    text = browser.find_element(By.TAG_NAME, "body").text
    for words in ("November 2026", "Oktober 2026", "Minggu, 1 November 2026", "tidak tercapai", "Rencana Kerja"):
        assert words in text, words
    p1_rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#laporan-analisis tr")
               if NOVEMBER_P1_TITLE in row.text]
    assert len(p1_rows) == 1
    assert "Selasa, 3 November 2026 pukul 23.30 WIT" in p1_rows[0]  # site03's own zone, as it was opened
    assert "terlampaui" in p1_rows[0]
    assert "LPSE Provinsi Tiga (site03)" in p1_rows[0]  # the inventory's site_name

    shot = written["folder"] / "chart.png"
    charts[0].screenshot(str(shot))
    with Image.open(shot) as image:
        pixels = numpy.asarray(image.convert("RGB"), dtype=numpy.int16)
    coloured = int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())
    assert coloured > 500, f"utilisation chart has {coloured} coloured pixels of {pixels.shape[0] * pixels.shape[1]}"


def test_report_monthly_pdf_pages_show_charts_and_indonesian_text(written: dict[str, Path]) -> None:
    pdf = written["pdf"]
    assert pdf.read_bytes().startswith(b"%PDF")
    pages_dir = written["folder"] / "pages"
    pages_dir.mkdir()
    subprocess.run([_binary("pdftoppm"), "-r", "40", "-png", str(pdf), str(pages_dir / "page")], check=True,
                   timeout=60)
    pages = sorted(pages_dir.glob("page-*.png"))
    assert len(pages) >= 3

    def close(pixels: numpy.ndarray, colour: tuple[int, int, int]) -> int:
        return int((numpy.abs(pixels - numpy.array(colour)).max(axis=2) <= 25).sum())

    line = bars = 0
    for page in pages:
        with Image.open(page) as image:
            pixels = numpy.asarray(image.convert("RGB"), dtype=numpy.int16)
        line += close(pixels, SITE_LINE)
        bars += close(pixels, BAR)
    assert line > 100, f"site01's utilisation line: {line} pixels in the PDF"
    assert bars > 100, f"bar charts: {bars} pixels in the PDF"

    text = subprocess.run([_binary("pdftotext"), "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True, timeout=60).stdout
    for words in ("Laporan Bulanan Pemantauan", "1. Laporan Monitoring", "Klausul 8.1.3", "November 2026",
                  "Oktober 2026", "Analisis Gangguan Prioritas 1", "WITA"):
        assert words in text, words
    assert "file://" not in text  # no browser header or footer printed on the pages


def test_report_compliance_html_in_chromium(written: dict[str, Path], browser: webdriver.Chrome) -> None:
    browser.get(written["compliance"].as_uri())
    h2 = [element.text for element in browser.find_elements(By.TAG_NAME, "h2")]
    assert h2[0].startswith("Ringkasan") and all("Klausul" in title for title in h2), h2
    assert any(title.startswith("1. Ketepatan Penanganan Gangguan") for title in h2)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Laporan Pencapaian dan Kepatuhan Service Level Agreement"
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "1 November 2026 s.d. 30 November 2026" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2  # drills, audit scores


def test_report_chromium_flags_send_no_dns_query_nor_connection(written: dict[str, Path], tmp_path: Path) -> None:
    """Chromium with our flags only (no network namespace) prints the page and sends nothing: every
    connect and send it makes is watched with strace; only local sockets and the kernel's are allowed."""
    strace = _binary("strace")
    argv = chromium.pdf_argv(_binary("chromium", "chromium-browser"), written["html"], tmp_path / "x.pdf",
                             tmp_path / "profile", offline=False)
    trace = tmp_path / "trace.log"
    subprocess.run([strace, "-f", "-qq", "-s", "200", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", str(trace),
                    *argv], capture_output=True, timeout=120, check=False)
    assert (tmp_path / "x.pdf").read_bytes().startswith(b"%PDF")
    lines = trace.read_text(errors="replace").splitlines()
    outward = [line for line in lines if ("sa_family=AF_INET" in line and "htons(53)" in line)
               or "EINPROGRESS" in line or "google" in line]
    assert not outward, "\n".join(outward[:5])
