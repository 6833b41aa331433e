"""Looking at an HTML page in headless Chromium (Debian's ``chromium``), as a person would at a
given window width: what the layout engine measured (overflow, images, captions) and a screenshot.

The page itself has no scripts; a copy of it gets one that measures after the load event and
writes what it found into the DOM as JSON, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=10000",
)
"""--no-sandbox: Chromium refuses to run as root with its sandbox (the tests run as root in CI)."""

MEASURE = """
<script>
window.addEventListener("load", () => {
  const root = document.documentElement;
  const vw = root.clientWidth;
  const rect = (e) => e.getBoundingClientRect();
  const wide = [...document.querySelectorAll("body *")]
    .filter((e) => rect(e).right > vw + 0.5)
    .map((e) => e.tagName.toLowerCase() + (e.className ? "." + e.className : ""));
  const figures = [...document.querySelectorAll("figure")].map((f) => {
    const c = f.querySelector("figcaption"), n = f.querySelector(".name");
    const fr = rect(f), cr = rect(c);
    return {
      caption_inside: cr.left >= fr.left - 0.5 && cr.right <= fr.right + 0.5,
      name_cut: n.scrollWidth > n.clientWidth, ellipsis: getComputedStyle(n).textOverflow,
      title: n.title, text: n.textContent, left: fr.left, right: fr.right, top: fr.top, bottom: fr.bottom,
    };
  });
  const pre = document.querySelector("pre");
  const result = {
    inner_width: window.innerWidth, client_width: vw, scroll_width: root.scrollWidth, wide,
    images: [...document.images].map((i) => ({complete: i.complete, width: i.naturalWidth})),
    figures, pre: pre ? {scroll_width: pre.scrollWidth, client_width: pre.clientWidth} : null,
    svg_texts: [...document.querySelectorAll("svg text")].map((t) => t.textContent),
  };
  const out = document.createElement("script");
  out.type = "application/json"; out.id = "imgfeat-measured"; out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    assert exe, "Debian's chromium is needed (apt-get install chromium; make dev installs it)"
    env = dict(os.environ, HOME=str(profile))  # nothing of the user's profile, nothing left behind
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180, env=env, check=False)


def measure(page: Path, tmp: Path, *, width: int = 1300, height: int = 1000) -> dict[str, Any]:
    """What Chromium measured on ``page`` at ``width`` x ``height`` pixels (see :data:`MEASURE`)."""
    probe = tmp / ("measured-" + page.name)
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    proc = _run([f"--window-size={width},{height}", "--dump-dom", probe.as_uri()], tmp / "profile-measure")
    found = re.search(r'<script type="application/json" id="imgfeat-measured">(.*?)</script>', proc.stdout, re.S)
    assert found, f"chromium printed no measurement (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(found.group(1))


def screenshot(page: Path, tmp: Path, *, width: int = 1300, height: int = 1000) -> Path:
    """A PNG of ``page`` as Chromium renders it in a ``width`` x ``height`` window."""
    png = tmp / (page.stem + ".png")
    proc = _run([f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()], tmp / "profile-shot")
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return png
