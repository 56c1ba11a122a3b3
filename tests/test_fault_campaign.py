"""A short fault campaign (scripts/fault_campaign.py, seeded): damaged shipped cases, a damaged tiny case that is
run, damaged result files given to info, plot and simulate. Every try must exit 0 or 2 (2: one error line
last), print no traceback, end within the bound, not crash, and leave its input unchanged with no temporary or
partial file beside it. The longer version: ``python scripts/fault_campaign.py --tries 40``."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fault_campaign.py"


def _campaign_module():
    spec = importlib.util.spec_from_file_location("fault_campaign", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    fc = _campaign_module()
    return fc, fc.campaign(tmp_path_factory.mktemp("faults"), seed=11, per_category=6, bound=120.0)


def test_every_try_ends_cleanly(records):
    fc, recs = records
    report = fc.table(recs)
    bad = [(r["category"], r["what"], r["argv"][0], r.get("rc"), "hang" if r.get("hang") else "",
            "crash" if r.get("crash") else "", r["left_over"], (r.get("stderr") or "")[-300:])
           for r in recs if r["bad"] or r["internal"]]
    assert not bad, report + "\n" + "\n".join(map(str, bad))


def test_the_campaign_exercises_both_outcomes(records):
    """Not a campaign that cannot fail: every category runs its tries, most mutations are refused with a clear
    line, and some are legal and run."""
    fc, recs = records
    cats = {r["category"] for r in recs}
    assert cats == set(fc.CATEGORIES)
    assert all(sum(r["category"] == c for r in recs) == 6 for c in cats)
    assert sum(r["clear"] for r in recs) >= len(recs) // 2
    assert sum(r["ok"] for r in recs) >= 1


def test_the_classifier_sees_failures():
    fc = _campaign_module()
    base = {"rc": 2, "stderr": "hjbsolve: error: x.toml: model.tau: must be > 0\n", "damaged": False}
    assert not fc.classify(dict(base))["bad"]
    assert fc.classify(dict(base, stderr="Traceback (most recent call last):\nhjbsolve: error: x\n"))["bad"]
    assert fc.classify(dict(base, rc=1))["bad"]
    assert fc.classify(dict(base, damaged=True))["bad"]
    assert fc.classify(dict(base, rc=None, hang=True))["bad"]
    assert fc.classify(dict(base, rc=-11, crash=True))["bad"]
    assert fc.classify(dict(base, stderr="hjbsolve: WARNING: something\n"))["bad"]
