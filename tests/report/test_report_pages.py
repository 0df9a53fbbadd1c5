"""Every sample report as a reader sees it, in headless Chromium at 1400 and 800 px: every image
decodes, nothing makes the page scroll sideways, no markup shows as text, and the first screen
tells the story (what happened, why, what to do, the evidence).

Each check can fail: a table too wide for 800 px, a figure that did not embed, an HTML string
escaped twice or markdown left unrendered each make it fail, naming the element or the text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from conftest import SAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-extensions", "--disable-sync", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
WIDTHS = (1400, 800)
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.iterdir() if (p / "nodes").is_dir()) if SAMPLES.is_dir() else []

# After load: images that did not decode, elements reaching past the window's right edge (the
# page scrolls sideways), text that is markup or markdown left as text, and the first screen's
# headings. Written into the DOM as JSON for the test to read from --dump-dom.
PROBE = r"""<script>
window.addEventListener("load", function () {
  var out = {width: window.innerWidth, scroll: document.documentElement.scrollWidth};
  out.images = Array.prototype.slice.call(document.images).map(function (i) {
    return {ok: i.complete && i.naturalWidth > 0, alt: i.alt || i.src.slice(0, 30)}; });
  out.wide = [];
  document.querySelectorAll("body *").forEach(function (e) {
    var r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > window.innerWidth + 1 && getComputedStyle(e).position !== "fixed") {
      out.wide.push(e.tagName.toLowerCase() + "." + (e.className || "").toString().split(" ")[0] +
                    " right=" + Math.round(r.right) + " " + (e.textContent || "").slice(0, 60));
    }
  });
  var markup = /<\/?(div|p|span|table|tr|td|h[1-6]|ul|li|strong|em|code|pre|details|a)\b[^>]*>|&(lt|gt|amp|quot|#\d+);|\*\*\w|\\math|\$\\|^#{1,4} \w/;
  var walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), t;
  out.markup = [];
  while ((t = walk.nextNode())) {
    if (t.parentElement && /^(SCRIPT|STYLE)$/.test(t.parentElement.tagName)) continue;
    var m = markup.exec(t.nodeValue);
    if (m) out.markup.push(t.nodeValue.slice(Math.max(0, m.index - 30), m.index + 50));
  }
  var story = document.querySelector(".natlens-story");
  out.story = story ? Array.prototype.map.call(story.querySelectorAll("h3"), function (h) {
    return h.textContent.trim(); }) : [];
  out.banner = !!document.querySelector(".natlens-banner");
  document.body.setAttribute("data-probe", JSON.stringify(out));
});
</script>"""


@pytest.fixture(scope="module")
def sample_reports(tmp_path_factory):
    """Each sample's report, built once for the module."""
    from natlens.report.run import build_report

    out = {}
    for name in SAMPLE_NAMES:
        r = build_report(SAMPLES / name, tmp_path_factory.mktemp("pages") / name)
        assert r.ok, f"{name}: {r.error}"
        out[name] = r.html
    return out


def _probe(html_path, width: int, tmp_path) -> dict:
    import html

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian chromium is missing (.ci/run installs it)")
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(html_path.read_text().replace("</body>", PROBE + "</body>", 1))
    cmd = [CHROMIUM, *FLAGS, f"--window-size={width},1000", f"--user-data-dir={tmp_path / f'profile-{width}'}",
           "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', r.stdout)
    assert m, "the page did not finish loading"
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_report_reads_cleanly(sample_reports, name, width, tmp_path):
    p = _probe(sample_reports[name], width, tmp_path)
    assert p["width"] == width  # the window the layout was made for
    assert p["images"] and all(i["ok"] for i in p["images"]), f"{name}: broken images {p['images']}"
    assert p["scroll"] <= width and p["wide"] == [], f"{name} at {width} px scrolls sideways: {p['wide'][:5]}"
    assert p["markup"] == [], f"{name}: markup shown as text: {p['markup'][:5]}"
    assert p["banner"], name
    assert p["story"][:1] == ["Why"] or p["story"][:1] == ["What to do"], p["story"]
    assert "What to do" in p["story"] and p["story"][-1] == "Evidence", p["story"]


def test_probe_catches_what_it_is_for(tmp_path):
    """The probe itself: a wide table, a broken image and escaped markup are each reported."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><div class="natlens-banner"></div><table style="width:2000px"><tr><td>x</td>'
                    '</tr></table><img src="data:image/png;base64,AAAA" alt="broken">'
                    "<p>&lt;strong&gt;13&lt;/strong&gt; and **bold** and $\\mathdefault{2}$</p></body></html>")
    p = _probe(page, 800, tmp_path)
    assert p["scroll"] > 800 and any(w.startswith("table") for w in p["wide"])
    assert [i["ok"] for i in p["images"]] == [False]
    assert len(p["markup"]) == 1 and "<strong>" in p["markup"][0]
    assert p["story"] == []
