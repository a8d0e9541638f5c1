"""code_version: what trained a model, truthful where there is no .git (the Docker image)."""
import subprocess

from assets.training import code_version, version


def test_the_build_argument_wins(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CODE_VERSION", "abc1234")
    assert code_version() == "abc1234"


def test_a_checkout_gives_its_commit(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_CODE_VERSION", raising=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=version.__file__.rsplit("/", 1)[0]).stdout.strip()
    assert head and code_version().removesuffix("-dirty") == head


def test_without_git_the_installed_package_version_not_unknown(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_CODE_VERSION", raising=False)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(version.subprocess, "run", no_git)
    from importlib.metadata import version as installed

    assert code_version() == f"rag-flywheel {installed('rag-flywheel')} (no git checkout)"
