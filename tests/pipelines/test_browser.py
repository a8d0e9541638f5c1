"""Both UIs in a real browser, as a user sees them: `flywheel ui` on a home where the whole graph ran twice,
then headless Chromium (Debian's, driven by Selenium) opens four pages and each test asserts on their text.

1. the Dagster asset graph        2. the evaluation_report asset with its latest materialization's metadata
3. the MLflow experiment's runs   4. MLflow's comparison of the two training runs
5-6. query_review and query_segments, materialized from the Dagster UI (its Materialize button; the daemon
     that `flywheel ui` starts runs them) and their metadata: the review queue and the segments with their plot

Screenshots go to $FLYWHEEL_TEST_ARTIFACTS/ui/ (default <repo>/test-artifacts/ui/), one PNG a page, kept for
a person to look at. Skipped when /usr/bin/chromium or /usr/bin/chromedriver is missing (`.ci/run` installs
both)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from resources.embedder import EmbedderResource

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("FLYWHEEL_TEST_ARTIFACTS") or REPO / "test-artifacts") / "ui"
PAGE_TIMEOUT = 90   # seconds: generous, for 2 busy cores
VIEWPORT = (1600, 1000)

pytestmark = [
    pytest.mark.slow, pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]

CONFIG = {"ops": {
    "synthetic_queries": {"config": {"queries_per_chunk": 1}},
    "relevance_labels": {"config": {"max_queries": 30, "candidates_per_query": 2}},
    "finetuned_biencoder": {"config": {"max_steps": 2, "batch_size": 8, "evals_per_run": 1,
                                       "min_change_to_retrain": 0}},   # the second run trains again: two runs to compare
    "finetuned_crossencoder": {"config": {"max_steps": 2, "batch_size": 8, "evals_per_run": 1, "max_length": 64}},
    "learning_curve": {"config": {"sizes": [4], "logged_sizes": [4], "seeds": [0], "batch_size": 8}},   # one model
}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, body: dict | None = None) -> bool:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def ports():
    return {"dagster": _free_port(), "mlflow": _free_port()}


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_beir, tiny_model_path, tiny_feedback_log, ports):
    """A home as `flywheel run` leaves it, twice over: the runs are in <home>/dagster's instance (what the UI
    reads) and each trained a bi-encoder, tracked as its own MLflow run."""
    from tests.conftest import fake_llm_class

    home = tmp_path_factory.mktemp("ui_home")
    (home / "dagster").mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    config = {"ops": {**CONFIG["ops"], "corpus": {"config": {"path": str(tiny_beir)}},
                      "feedback": {"config": {"path": str(tiny_feedback_log)}}}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_MLFLOW_UI", f"http://127.0.0.1:{ports['mlflow']}")   # the run links in the metadata
        for _ in range(2):
            defs = build_definitions(home, llm=fake_llm_class()(), embedder=EmbedderResource(model=tiny_model_path))
            result = defs.resolve_job_def("flywheel_job").execute_in_process(run_config=config, instance=instance)
            assert result.success
    instance.dispose()
    nux = home / "dagster" / ".nux"   # Dagster's one-time community sign-up dialog would cover the first page
    nux.mkdir()
    (nux / "nux.yaml").write_text("seen: 1\n")
    return home


@pytest.fixture(scope="module")
def training_runs(home):
    """The two bi-encoder runs, oldest first."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id], "tags.model_kind = 'bi-encoder'",
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    return experiment, runs


@pytest.fixture(scope="module")
def servers(home, ports, tiny_model_path):
    """`flywheel ui --home <home>` on free ports, from this checkout; stopped after the module's tests. The UI's
    runs use the tiny model the home was built with (FLYWHEEL_BASE_MODEL) and the bundled local LLM."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "FLYWHEEL_BASE_MODEL": tiny_model_path}
    log = open(ARTIFACTS / "servers.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "flywheel"), "ui", "--home", str(home),
                             "--dagster-port", str(ports["dagster"]), "--mlflow-port", str(ports["mlflow"])],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        deadline = time.time() + 180
        while not (_answers(f"{urls['dagster']}/graphql", {"query": "{ version }"})
                   and _answers(f"{urls['mlflow']}/api/2.0/mlflow/experiments/search", {"max_results": 1})):
            assert proc.poll() is None, f"flywheel ui exited with {proc.returncode}; see {ARTIFACTS / 'servers.log'}"
            assert time.time() < deadline, f"the UIs did not answer within 180 s; see {ARTIFACTS / 'servers.log'}"
            time.sleep(1)
        yield urls
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)   # with the driver's path too, Selenium Manager never looks online
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        set_viewport(driver, *VIEWPORT)
        yield driver
    finally:
        driver.quit()


def set_viewport(driver, width: int, height: int) -> None:
    """Size the window so that the page itself (what a screenshot holds) is width x height."""
    driver.set_window_size(width, height)
    inner_w, inner_h = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner_w, 2 * height - inner_h)


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver, what: str, condition, timeout: float = PAGE_TIMEOUT):
    """Poll condition(driver) until it is truthy; on timeout, fail with what the page shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        raise AssertionError(f"{driver.current_url} never showed {what}; it shows:\n{body_text(driver)[:3000]}") from None


def show(driver, url: str, *texts: str) -> str:
    """Open url and wait until the page's visible text holds every one of texts; returns that text."""
    driver.get(url)
    wait_for(driver, list(texts), lambda d: all(t in body_text(d) for t in texts))
    return body_text(driver)


def click(driver, xpath: str) -> None:
    from selenium.webdriver.common.by import By

    wait_for(driver, xpath, lambda d: any(e.is_displayed() for e in d.find_elements(By.XPATH, xpath)))
    next(e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()).click()


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot of {driver.current_url}"
    return path


def drawn(name: str, text: str) -> bool:
    """The graph draws a long name middle-truncated (`finetun…_biencoder`): either form counts."""
    lines = text.splitlines()
    return name in lines or any("…" in line and name.startswith(line.split("…")[0])
                                and name.endswith(line.split("…")[1]) for line in lines)


def test_dagster_asset_graph_draws_every_asset(browser, servers):
    """The global asset lineage with every group expanded (⌥E, as a user would), in a viewport as tall as the
    whole graph is when Dagster fits it to the width."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    body = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
    req = urllib.request.Request(f"{servers['dagster']}/graphql", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assets = sorted(n["assetKey"]["path"][-1] for n in json.loads(resp.read())["data"]["assetNodes"])
    assert {"evaluation_report", "finetuned_biencoder", "synthetic_queries"} <= set(assets)
    try:
        show(browser, f"{servers['dagster']}/asset-groups", "Global asset lineage", "evaluation", "training")
        click(browser, "//*[normalize-space()='Hide navigation']")          # the graph gets the navigation's width
        click(browser, "//button[.//*[@aria-label='panel_show_right']]")   # and the asset tree's
        ActionChains(browser).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()   # expand all groups
        wait_for(browser, "an asset of an expanded group", lambda d: any(drawn(a, body_text(d)) for a in assets))
        set_viewport(browser, VIEWPORT[0], wait_for(browser, "the graph's height", steady(graph_fit_height)))
        # a double click on the background fits the graph to the viewport, as it does for a user; again on each
        # poll until it fits, since a click that lands before the viewport has taken its new size fits the old one
        wait_for(browser, "the whole graph in view, as wide as the viewport", fit_graph)
        wait_for(browser, f"every asset of {assets}", lambda d: all(drawn(a, body_text(d)) for a in assets))
        assert "evaluation_report" in body_text(browser).splitlines()
        # each node turns green once the UI has loaded its latest materialization (grey until then)
        wait_for(browser, f"all {len(assets)} assets as materialized", lambda d: len(d.find_elements(
            By.CSS_SELECTOR, "[class*='minimalAssetNodeBox'][style*='accent-green']")) == len(assets))
        screenshot(browser, "1_dagster_asset_graph")
    finally:
        set_viewport(browser, *VIEWPORT)


GEOMETRY = """   // the graph viewport's box and the (largest) graph svg's box, in page pixels
    const box = document.querySelector('[data-svg-viewport]').getBoundingClientRect();
    const graph = [...document.querySelectorAll('[data-svg-viewport] svg')]
        .sort((a, b) => b.getAttribute('width') - a.getAttribute('width'))[0];
    const r = graph.getBoundingClientRect();
    return {box: [box.left, box.top, box.width, box.height], graph: [r.left, r.top, r.width, r.height]};"""


def fit_graph(driver) -> bool:
    """Whether the graph is wholly inside its viewport and at least 90% as wide; if not, double-click the
    background (Dagster's zoom-to-fit) for the next poll to look at."""
    g = driver.execute_script(GEOMETRY)
    (bl, bt, bw, bh), (gl, gt, gw, gh) = g["box"], g["graph"]
    if gw > 0.9 * bw and gl >= bl - 1 and gl + gw <= bl + bw + 1 and gt >= bt - 1 and gt + gh <= bt + bh + 1:
        return True
    driver.execute_script("document.querySelector('[data-svg-viewport]')"
                          ".dispatchEvent(new MouseEvent('dblclick', {bubbles: true}))")
    return False


def steady(measure):
    """A wait condition: measure(driver), once two polls in a row agree (a layout may still be changing)."""
    seen = []

    def condition(driver):
        seen.append(measure(driver))
        return seen[-1] if seen[-1] is not None and seen[-2:] == [seen[-1]] * 2 else None
    return condition


def graph_fit_height(driver) -> int | None:
    """The window height at which the whole graph shows when Dagster fits its width (at most 1:1)."""
    return driver.execute_script("""
        const viewport = document.querySelector('[data-svg-viewport]');
        const svgs = [...(viewport ? viewport.querySelectorAll('svg') : [])];
        const graph = svgs.sort((a, b) => b.getAttribute('width') - a.getAttribute('width'))[0];
        if (!graph || !(+graph.getAttribute('height') > 0)) return null;
        const box = viewport.getBoundingClientRect();
        const scale = Math.min(1, box.width / +graph.getAttribute('width'));
        return Math.ceil(window.innerHeight - box.height + scale * +graph.getAttribute('height') + 80);""")


def test_dagster_evaluation_asset_shows_its_latest_report(browser, servers, training_runs):
    """The asset's page shows the latest materialization's metadata: the MLflow link of the second run's model
    and the report table (opened as a user would, from its [Show Markdown] link)."""
    from selenium.webdriver.common.by import By

    _, runs = training_runs
    latest = runs[-1].info.run_id
    text = show(browser, f"{servers['dagster']}/assets/evaluation_report", "Latest materialization", "mlflow_run",
                "human/", "/ndcg@10")
    assert f"{servers['mlflow']}/#/experiments/{runs[-1].info.experiment_id}/runs/{latest}" in text
    wait_for(browser, "the status loaded (no placeholders left)", lambda d: not any(
        e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, "[class*='skeleton' i]")))
    click(browser, "//a[normalize-space()='[Show Markdown]']")
    wait_for(browser, "the report table", lambda d: all(t in body_text(d) for t in (
        "ndcg@10", "mrr@10", "hybrid_finetuned+rerank_finetuned", "synthetic/test")))
    screenshot(browser, "2_dagster_evaluation_report")


def test_mlflow_experiment_lists_both_training_runs(browser, servers, training_runs):
    experiment, runs = training_runs
    show(browser, f"{servers['mlflow']}/#/experiments/{experiment.experiment_id}/runs",
         experiment.name, "matching runs", *(r.info.run_name for r in runs))
    close_mlflow_assistant(browser)
    screenshot(browser, "3_mlflow_experiment_runs")


def test_mlflow_compares_the_two_training_runs(browser, servers, training_runs):
    experiment, runs = training_runs
    query = urllib.parse.urlencode({"runs": json.dumps([r.info.run_id for r in runs]),
                                    "experiments": json.dumps([experiment.experiment_id])})
    show(browser, f"{servers['mlflow']}/#/compare-runs?{query}", "Comparing 2 Runs",
         *(r.info.run_id for r in runs), *(r.info.run_name for r in runs))
    close_mlflow_assistant(browser)
    for section in ("Visualizations", "Parameters"):   # folded, so that the metrics are in the screenshot
        click(browser, f"//div[@role='button' and @aria-expanded='true'][normalize-space()='{section}']")
    wait_for(browser, "an nDCG metric of both runs", lambda d: "ndcg_at_10" in body_text(d))
    screenshot(browser, "4_mlflow_compare_runs")


def close_mlflow_assistant(driver) -> None:
    """MLflow 3.17 opens its (LLM) assistant panel beside the page; a user closes it to see the runs."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()
    wait_for(driver, "no assistant panel", lambda d: "Ask a question" not in body_text(d))


def latest_materialization(url: str, asset: str) -> str | None:
    """The run id of the asset's latest materialization, from the webserver's GraphQL API."""
    query = ('{ assetNodes(assetKeys: [{path: ["%s"]}]) { assetMaterializations(limit: 1) { runId } } }' % asset)
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        nodes = json.loads(resp.read())["data"]["assetNodes"]
    found = nodes[0]["assetMaterializations"] if nodes else []
    return found[0]["runId"] if found else None


def materialize_from_the_ui(browser, url: str, asset: str, timeout: float = 600) -> str:
    """Open the asset's page, press Materialize as a user would, and wait until a new materialization lands."""
    before = latest_materialization(url, asset)
    show(browser, f"{url}/assets/{asset}", asset, "Materialize")
    click(browser, "//button[normalize-space()='Materialize']")
    deadline = time.time() + timeout
    while (now := latest_materialization(url, asset)) in (None, before):
        assert time.time() < deadline, f"{asset} was not materialized from the UI within {timeout:.0f} s; see " \
                                       f"{ARTIFACTS / 'servers.log'}"
        time.sleep(2)
    return now


def test_the_review_and_the_segments_materialize_from_the_dagster_ui(browser, servers):
    """A Materialize click on each asset's page runs it (queued, started by the daemon, with the bundled local
    judge), and the page then shows the new materialization's metadata: the worst queries first, and the
    segments with their plot."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    materialize_from_the_ui(browser, servers["dagster"], "query_review")
    show(browser, f"{servers['dagster']}/assets/query_review", "Latest materialization", "n_sampled",
         "mean_precision", "worst", "query_id text precision top_cosine", "how does")
    [worst] = [e for e in browser.find_elements(By.XPATH, "//td[normalize-space()='worst']") if e.is_displayed()]
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", worst)   # the queue itself in view
    screenshot(browser, "5_dagster_query_review")
    materialize_from_the_ui(browser, servers["dagster"], "query_segments")
    show(browser, f"{servers['dagster']}/assets/query_segments", "Latest materialization", "n_segments", "silhouette",
         "[Show Markdown]")
    click(browser, "(//a[normalize-space()='[Show Markdown]'])[1]")   # the segments table
    wait_for(browser, "the segments table", lambda d: all(t in body_text(d) for t in ("name", "share", "examples",
                                                                                       "precision", "trend")))
    screenshot(browser, "6_dagster_query_segments")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    click(browser, "(//a[normalize-space()='[Show Markdown]'])[2]")   # the plot
    wait_for(browser, "the segments plot", lambda d: any(
        (img.get_attribute("src") or "").startswith("data:image/png") and img.is_displayed()
        for img in d.find_elements(By.TAG_NAME, "img")))
    screenshot(browser, "7_dagster_query_segments_plot")
