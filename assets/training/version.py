"""code_version: what code trained a model, for its MLflow tags."""
import os
import subprocess
from pathlib import Path


def code_version() -> str:
    """What code trained a model, for its MLflow tags: FLYWHEEL_CODE_VERSION (the Docker image sets it from a
    build argument: there is no .git inside), else the git commit (with "-dirty" for uncommitted changes),
    else the installed package's version."""
    if os.environ.get("FLYWHEEL_CODE_VERSION"):
        return os.environ["FLYWHEEL_CODE_VERSION"]
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here, timeout=5).stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, cwd=here, timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"rag-flywheel {version('rag-flywheel')} (no git checkout)"
    except PackageNotFoundError:
        return "unknown"
