"""The package's layers, checked over every module: imports run one way, with no circles (imports inside
functions included), and the read commands work with Celery unimportable."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import benchcelery
from tests.conftest import BenchHandle

PACKAGE = Path(benchcelery.__file__).parent

# Lower ranks never import higher ones. Same rank may import each other (no circles, checked below).
RANKS = {
    "benchcelery.errors": 0,
    "benchcelery.context": 0,
    "benchcelery.util": 0,
    "benchcelery.bench": 1,  # the bench on disk, config, key names
    "benchcelery.store": 2,  # Redis without Celery
    "benchcelery.broker": 3,  # Celery + kombu
    "benchcelery.runtime": 4,  # the process's bench: settings, Celery app, Redis client
    "benchcelery.jobs": 5,
    "benchcelery.worker": 6,
    "benchcelery.scheduler": 6,
    "benchcelery.diagnostics": 7,
    "benchcelery.realtime": 7,
    "benchcelery.dashboard": 8,
    "benchcelery.compat": 8,  # Frappe/rq stand-ins over the public API
    "benchcelery.deploy": 8,
    "benchcelery.cli": 9,
    "benchcelery.app": 10,  # `celery -A benchcelery.app`
    "benchcelery.demo": 10,
    "benchcelery.__main__": 10,
    "benchcelery": 8,  # the public API (lazy re-exports of jobs and realtime); library code imports the owning module
}
# App code shipped as an example imports the public API like any app.
OUTSIDE = ("benchcelery.example_app",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every benchcelery module this file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("benchcelery")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("benchcelery"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def _rank(module: str) -> int:
    best = max((prefix for prefix in RANKS if module == prefix or module.startswith(prefix + ".")), key=len)
    return RANKS[best]


def _graph() -> dict[str, set[str]]:
    modules = _all_modules()
    return {name: _imports(path, modules) for name, path in modules.items() if not name.startswith(OUTSIDE)}


def test_every_module_imports_only_its_own_layer_or_those_below() -> None:
    wrong = [
        f"{module} (layer {_rank(module)}) imports {target} (layer {_rank(target)})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _rank(target) > _rank(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli() -> None:
    wrong = [
        f"{m} imports {t}"
        for m, targets in _graph().items()
        if not m.startswith("benchcelery.cli") and m != "benchcelery.__main__"
        for t in targets
        if t.startswith("benchcelery.cli")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles_lazy_ones_included() -> None:
    graph = _graph()
    # The package itself re-exports the public API lazily (PEP 562): its edges are not part of any layer.
    graph.pop("benchcelery", None)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_see_the_real_tree() -> None:
    """The checks above must see every package (a rule that matches nothing cannot fail)."""
    graph = _graph()
    for prefix in RANKS:
        assert any(m == prefix or m.startswith(prefix + ".") for m in graph), f"no module under {prefix}"
    assert sum(len(t) for t in graph.values()) > 200


BLOCK_CELERY = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Blocked(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("celery", "kombu", "billiard", "redbeat"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocked())
    from benchcelery.cli import main
    sys.argv = ["bench", *sys.argv[1:]]
    main()
    """
)


def test_read_commands_work_with_celery_unimportable(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.noop", queue="short")
    for args in (
        ["show-pending-jobs", "-f", "json"],
        ["show-pending-jobs", "-v"],
        ["jobs", "list"],
        ["doctor", "-f", "json"],
        ["scheduler", "status"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", BLOCK_CELERY, "--site", "site1.local", *args],
            cwd=bench.root,
            env=bench.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "is blocked in this test" not in done.stderr + done.stdout, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    pending = subprocess.run(
        [sys.executable, "-c", BLOCK_CELERY, "--site", "site1.local", "show-pending-jobs", "-f", "json"],
        cwd=bench.root,
        env=bench.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pending.returncode == 0, pending.stderr
    assert '"short"' in pending.stdout
