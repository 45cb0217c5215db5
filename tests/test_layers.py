"""The package's dependency order, read from every module's imports (those inside functions
too): vocabulary and helpers at the bottom, then grammars, trainers, analysis (which uses
neither trainers nor orchestrator), orchestrator, and the command line on top, imported by
nothing. A violation names the module, the line and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = {"gzipscale", "vocabulary", "helpers"}
# What each part may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "vocabulary": set(),
    "helpers": set(),
    "gzipscale": set(),  # the package's own __init__
    "grammars": BASE,
    "trainers": BASE | {"grammars"},
    "analysis": BASE | {"grammars"},
    "orchestrator": BASE | {"grammars", "trainers", "analysis"},
    "cli": BASE | {"grammars", "trainers", "analysis", "orchestrator"},
    "__main__": {"cli"},
}
STAGES = ("grammars", "trainers", "analysis", "orchestrator")


def _part_of(module_path: Path, root: Path = ROOT) -> str:
    rel = module_path.relative_to(root)
    if len(rel.parts) == 1:
        return "gzipscale" if rel.stem == "__init__" else rel.stem
    return rel.parts[0]


def _modules() -> list[Path]:
    files = [p for p in ROOT.glob("*.py")]
    for stage in STAGES:
        files += sorted((ROOT / stage).glob("*.py"))
    return files


def _imported_parts(path: Path, root: Path = ROOT) -> list[tuple[int, str, str]]:
    """(line, part imported, the import as written) for every project import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _part_of(path, root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside this part (or, from the root, a root module)
                if here in STAGES:
                    found.append((node.lineno, here, f"from {'.' * node.level}{node.module}"))
                continue
            names = [node.module or ""]
            if node.module == "gzipscale":
                names = [f"gzipscale.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "gzipscale":
                continue
            part = parts[1] if len(parts) > 1 else "gzipscale"
            found.append((node.lineno, part, name))
    return found


def test_the_layout_has_modules_to_check():
    parts = {_part_of(p) for p in _modules()}
    assert {"vocabulary", "helpers", "cli", "__main__"} | set(STAGES) <= parts


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_dependency_order(path):
    here = _part_of(path)
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {text} (a {here} module may import only "
        f"{', '.join(sorted(ALLOWED[here])) or 'nothing of the project'})"
        for line, part, text in _imported_parts(path)
        if part != here and part not in ALLOWED[here]
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: an analysis module that imports the orchestrator inside a function
    is reported, and so is a root module reaching up."""
    (tmp_path / "analysis").mkdir()
    leak = tmp_path / "analysis" / "leak.py"
    leak.write_text("def f():\n    from gzipscale.orchestrator.sweep import run_sweep\n")
    assert _imported_parts(leak, tmp_path) == [(2, "orchestrator", "gzipscale.orchestrator.sweep")]
    assert "orchestrator" not in ALLOWED["analysis"]
    up = tmp_path / "helpers.py"
    up.write_text("from gzipscale import cli\n")
    assert _imported_parts(up, tmp_path) == [(1, "cli", "gzipscale.cli")]
    assert "cli" not in ALLOWED["helpers"]


def test_benchmarks_do_not_edit_sys_path():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "bench").glob("*.py")
        if "sys.path" in p.read_text()
    ]
    assert not offenders


def test_only_the_namespace_is_installed():
    """pyproject maps the root to `gzipscale` and installs only its subpackages."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"gzipscale": "."}
    assert all(p == "gzipscale" or p.startswith("gzipscale.") for p in config["packages"])
    assert set(config["packages"]) == {"gzipscale"} | {f"gzipscale.{s}" for s in STAGES}
