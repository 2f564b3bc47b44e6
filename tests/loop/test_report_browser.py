"""report.html as a person sees it: opened from disk in headless Chromium (Debian's ``chromium``
package; ``.ci/run`` installs it where apt-get can), the page renders, every plot loads, and its
screenshot is not blank."""

import re
import shutil
import subprocess

import pytest

from ratchet.loop.report import write_report
from test_report import fake_run

pytestmark = pytest.mark.slow  # a headless Chromium subprocess

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# appended to a copy of the page (same folder, so relative plot paths resolve the same way): after
# the load event, a marker says how many images the browser decoded
IMAGE_CHECK = ("<script>window.addEventListener('load', function () {"
               "var all = Array.from(document.images);"
               "var ok = all.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;"
               "var d = document.createElement('div'); d.id = 'image-check';"
               "d.textContent = 'images loaded ' + ok + ' of ' + all.length; document.body.appendChild(d);"
               "});</script>")


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("headless Chromium is not installed: `apt-get install -y chromium` (Debian's package; "
                    ".ci/run installs it where apt-get works)")
    return path


def _run_chromium(chromium, tmp_path, *args):
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def _images_loaded(chromium, tmp_path, page):
    check = page.with_name("image-check.html")
    check.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    try:
        dom = _run_chromium(chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom", check.as_uri())
    finally:
        check.unlink()
    found = re.search(r"images loaded (\d+) of (\d+)", dom)
    assert found, f"the page did not finish loading in Chromium: {dom[-1000:]}"
    return int(found.group(1)), int(found.group(2)), dom


def test_report_renders_in_chromium_with_every_plot(tmp_path):
    pytest.importorskip("matplotlib")
    chromium = _chromium()
    run = tmp_path / "run"
    page = write_report(run, fake_run(run))
    sources = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert len(sources) >= 5  # the metric plots and the answers' plots
    for src in sources:  # every src is a file beside the page, a PNG
        assert (run / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src

    loaded, total, dom = _images_loaded(chromium, tmp_path, page)
    assert (loaded, total) == (len(sources), len(sources))
    assert "<h1>ratchet report</h1>" in dom and "Held-out answers side by side" in dom

    # the check sees a broken image: with one plot gone, one fewer loads
    (run / sources[0]).rename(tmp_path / "moved.png")
    assert _images_loaded(chromium, tmp_path, page)[:2] == (len(sources) - 1, len(sources))
    (tmp_path / "moved.png").rename(run / sources[0])

    shot = tmp_path / "report.png"
    _run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::97].round(2).tolist()}
    assert len(colours) > 10, f"the screenshot is nearly blank: {len(colours)} colours"
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert not_white > 0.02, f"the screenshot is nearly blank: {not_white:.1%} of it is not white"
