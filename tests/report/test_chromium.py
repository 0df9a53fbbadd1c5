"""The sample report in headless Chromium with the network disabled: it renders with the
verdict and the figures, and a screenshot is kept under test-artifacts/."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Debian chromium, sandbox off (root in CI), and no way to reach the network: every host
# name resolves to nothing and every request goes to a closed local proxy.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-extensions", "--disable-sync", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         "--window-size=1300,2400"]
# Test-side probe, added to a copy of the report only: after load it writes into the DOM
# how many images decoded and whether anything reached for the network.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var res = performance.getEntriesByType("resource").map(function (e) { return e.name; });
  document.body.setAttribute("data-probe", "images=" + ok + "/" + imgs.length +
    " resources=" + res.filter(function (u) { return !/^data:/.test(u); }).length);
});
</script>"""


def _chromium(tmp_path, *args):
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian chromium is missing (.ci/run installs it)")
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_offline_with_verdict_and_figures(sample_report, tmp_path):
    page = sample_report.html.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>", 1))
    r = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    probe = re.search(r'data-probe="images=(\d+)/(\d+) resources=(\d+)"', dom)
    assert probe, "the page did not finish loading"
    loaded, total, external = map(int, probe.groups())
    assert total >= 3 and loaded == total, f"{loaded} of {total} figures decoded"
    assert external == 0
    assert re.search(r'class="natlens-banner verdict-\w+"', dom)
    assert "Loopback detected" in dom
    assert 'class="natlens-toc"' in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-loopback-local.png"
    shot.unlink(missing_ok=True)
    r = _chromium(tmp_path, f"--screenshot={shot}", sample_report.html.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    import matplotlib.image

    img = matplotlib.image.imread(str(shot))
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    # The red verdict banner is on screen: many pixels of its colour (#b3261e).
    rgb = (img[..., :3] * 255).round()
    red = ((abs(rgb[..., 0] - 0xB3) < 4) & (abs(rgb[..., 1] - 0x26) < 4) & (abs(rgb[..., 2] - 0x1E) < 4))
    assert red.sum() > 20000


def test_hostile_report_runs_no_injected_script(hostile_report, tmp_path):
    r = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", hostile_report.html.as_uri())
    assert r.returncode == 0
    # An executed natlensXss*() call would throw and stop; none of them is a DOM element.
    assert not re.search(r"<(script|img)[^>]*natlensXss", r.stdout)
    assert "natlensXssFile" in r.stdout  # shown as text


# After load: the rule trace's computed font and the width of "i" vs "M" runs in it (equal
# only in a monospace font, whichever CSS rule wins), and each table's width vs its box.
LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var pre = document.querySelector("pre.natlens-trace"), cs = getComputedStyle(pre);
  function width(s) { var e = document.createElement("span"); e.textContent = s; pre.appendChild(e);
    var w = e.getBoundingClientRect().width; pre.removeChild(e); return w.toFixed(1); }
  var line = pre.querySelector(".natlens-trace-line");
  var tables = Array.prototype.slice.call(document.querySelectorAll("table.natlens-table"))
    .map(function (t) { return t.getBoundingClientRect().width.toFixed(0) + "/" +
                               t.parentElement.clientWidth; });
  document.body.setAttribute("data-layout", [cs.fontFamily, cs.whiteSpace, width("iiiiiiiiii"),
    width("MMMMMMMMMM"), getComputedStyle(line).display, tables.join(",")].join("|"));
});
</script>"""


def test_rule_trace_is_monospace_and_tables_fit_the_page(sample_report, tmp_path):
    """JupyterLab's `.jp-OutputArea-output pre {font-family: inherit}` used to win over
    `pre.natlens-trace`; the loopback table used to overflow and squeeze its evidence."""
    import html

    probed = tmp_path / "layout.html"
    probed.write_text(sample_report.html.read_text().replace("</body>", LAYOUT_PROBE + "</body>", 1))
    r = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-layout="([^"]*)"', r.stdout)
    assert m, "the page did not finish loading"
    family, white_space, narrow, wide, line_display, tables = html.unescape(m.group(1)).split("|")
    assert "monospace" in family and white_space == "pre-wrap"
    assert float(narrow) == float(wide) > 0  # the font that renders is monospace
    assert line_display == "block"  # a long trace line wraps on its own (hanging indent)
    sizes = [tuple(map(int, t.split("/"))) for t in tables.split(",")]
    assert len(sizes) >= 5
    assert [s for s in sizes if s[0] > s[1]] == [], sizes  # no table wider than its box
