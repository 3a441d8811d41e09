"""A copy without .git (the GPU machine gets the working tree) still names its commit."""

import pytest

from fastssl import provenance
from fastssl.bench import harness
from fastssl.bench.harness import Provenance


@pytest.fixture
def no_git(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "git_commit", lambda: "unknown")
    monkeypatch.setattr(harness, "REPO_ROOT", str(tmp_path))
    monkeypatch.delenv("FASTSSL_COMMIT", raising=False)
    return tmp_path


def test_commit_from_the_environment(no_git, monkeypatch):
    monkeypatch.setenv("FASTSSL_COMMIT", "ab3272a")
    assert Provenance.collect("cpu").commit == "ab3272a"


def test_commit_from_a_commit_file(no_git):
    (no_git / "COMMIT").write_text("ab3272a+dirty\n2026-12-03\n")
    assert Provenance.collect("cpu").commit == "ab3272a+dirty"


def test_unknown_without_either(no_git):
    assert Provenance.collect("cpu").commit == "unknown"


def test_git_wins_when_present(monkeypatch):
    monkeypatch.setenv("FASTSSL_COMMIT", "not-this")
    monkeypatch.setattr(provenance, "git_commit", lambda: "1234567")
    assert Provenance.collect("cpu").commit.startswith("1234567")
