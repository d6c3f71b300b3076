"""`lossforge report`: the self-contained HTML report renders its images in a real headless browser."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from lossforge.agent.runner import run_search
from lossforge.report import report_summary, write_report
from lossforge.report.plots import pareto
from lossforge.sandbox.protocol import InProcessSandbox

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
_MARK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.setAttribute("data-widths", JSON.stringify(images.map(i => i.complete ? i.naturalWidth : 0)));
});
</script></body>"""


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, tiny_proxy, cache_dir) -> Path:
    from lossforge.config import RunConfig

    run_dir = tmp_path_factory.mktemp("run")
    config = RunConfig.model_validate({"proxy": tiny_proxy.model_dump(), "cache_dir": str(cache_dir), "search": {"generations": 3}})
    run_search(run_dir, config)
    sandbox = InProcessSandbox()
    try:
        write_report(run_dir, sandbox, top_k=3, betas=(0.05, 0.1), frontier_k=1)
    finally:
        sandbox.close()
    return run_dir


def test_the_report_has_html_markdown_and_every_plot(reported_run) -> None:
    summary = report_summary(reported_run)
    names = {Path(p).name for p in summary["plots"]}
    assert names == {"best_fitness.png", "loss_shapes.png", "reward_vs_kl.png", "frontier.png", "funnel.png", "costs.png"}
    markdown = Path(summary["markdown"]).read_text()
    for heading in ("## Reward-vs-KL frontier across betas", "## Rejection funnel", "## Costs", "## Loss shapes against DPO"):
        assert heading in markdown
    frontier = json.loads((reported_run / "report" / "frontier.json").read_text())
    assert len(frontier) == 3 * 2  # (top 1, dpo, discopop) x 2 betas, cached for the next report


def test_the_html_report_is_self_contained(reported_run) -> None:
    page = (reported_run / "report" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_the_html_report_renders_its_images_in_headless_chromium(reported_run, tmp_path) -> None:
    # Copied away from the run directory, so only what is inside the file can load.
    page = (reported_run / "report" / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _MARK_IMAGES))
    done = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-widths="([^"]*)"', done.stdout)
    assert found, f"the page did not finish loading: {done.stdout[:500]} {done.stderr[-1000:]}"
    widths = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(widths) == 6 and all(w > 100 for w in widths), widths


def test_pareto_keeps_the_best_reward_at_each_kl() -> None:
    assert pareto([(0.0, 0.0), (0.5, 0.4), (0.7, 0.3), (1.0, 0.9)]) == [(0.0, 0.0), (0.5, 0.4), (1.0, 0.9)]
