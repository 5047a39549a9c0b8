"""The layers of docs/architecture.md, enforced: which package may import which.

- The web layer (the app, middlewares, request helpers, `routes` modules, the SSE stream, the
  `system` and `internal` packages) may import everything below it; nothing below imports it.
- The core (domains' models, schemas, services; infrastructure; the unit of work) never imports
  the web layer, and no core module imports `aiohttp.web`.
- Actors import the core only, and no actor module imports another one (they share
  `actors.resources` and `actors.outcomes`, which import no actor).
- The supervisor imports only config, the constants, the metrics definitions, the embedded Redis
  and logging; `config` imports nothing of the project; the built-in worker is an HTTP client of
  /v2/internal and imports nothing of the server.

The import graph is read from the source (every `import`, at any depth), so a lazy import
inside a function counts too. A second test imports the actors' worker settings and the
supervisor's tree in a fresh interpreter and checks what actually got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vidwiz", "actors", "config")

WEB_MODULES = {
    "vidwiz.app",
    "vidwiz.web",
    "vidwiz.middleware",
    "vidwiz.access_log",
    "vidwiz.http_server",
    "vidwiz.context",
    "vidwiz.validation",
    "vidwiz.auth.guards",
    "vidwiz.videos.stream",
}
WEB_PACKAGES = ("vidwiz.system", "vidwiz.internal")
ACTOR_SHARED = {"actors", "actors.resources", "actors.outcomes", "actors.lifecycle"}
ACTOR_ENTRY = {"actors.worker", "actors.__main__"}  # they wire the actors together
SUPERVISOR_ALLOWED = ("config", "vidwiz.constants", "vidwiz.metrics", "vidwiz.embedded_redis", "vidwiz.logs")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    found["supervisor"] = ROOT / "supervisor.py"
    return found


MODULES = project_modules()


def imports_of(name: str) -> set[str]:
    """Every module `name` imports (project or not), resolved to full names."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from vidwiz.videos import service` imports the module vidwiz.videos.service, and
            # `from aiohttp import web` the module aiohttp.web; names inside a project module don't count.
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES or base.split(".")[0] not in (*PACKAGES, "supervisor"):
                    found.add(f"{base}.{alias.name}")
    return found


def is_web(name: str) -> bool:
    return (
        name in WEB_MODULES
        or name.startswith(WEB_PACKAGES)
        or (name.startswith("vidwiz.") and name.endswith(".routes"))
    )


def is_core(name: str) -> bool:
    return (
        name.startswith("vidwiz") and not is_web(name) and not name.startswith(("vidwiz.worker", "vidwiz.supervision"))
    )


def violations(rule: str, offenders: list[tuple[str, str]]) -> str:
    return f"{rule}:\n" + "\n".join(f"  {module} imports {imported}" for module, imported in sorted(offenders))


def test_the_layer_lists_name_real_modules():
    for name in WEB_MODULES:
        assert name in MODULES, name
    assert any(name.startswith(WEB_PACKAGES) for name in MODULES)


def test_the_core_never_imports_the_web_layer():
    offenders = [
        (name, imported)
        for name in MODULES
        if is_core(name)
        for imported in imports_of(name)
        if is_web(imported) or imported.startswith(("aiohttp.web", "aiohttp_sse"))
    ]
    assert not offenders, violations("the core imports the web layer", offenders)


def test_actors_import_the_core_only_and_never_each_other():
    offenders = []
    for name in MODULES:
        if not name.startswith("actors"):
            continue
        for imported in imports_of(name):
            if is_web(imported):
                offenders.append((name, imported))
            elif imported.startswith("actors.") and name not in ACTOR_ENTRY and imported not in ACTOR_SHARED:
                offenders.append((name, imported))
    assert not offenders, violations("an actor imports the web layer or another actor", offenders)


def test_the_supervisor_config_and_worker_stay_small():
    offenders = []
    for name in MODULES:
        project_imports = {i for i in imports_of(name) if i.split(".")[0] in (*PACKAGES, "supervisor")}
        if name == "supervisor" or name.startswith("vidwiz.supervision"):
            allowed = (*SUPERVISOR_ALLOWED, "vidwiz.supervision")
        elif name.startswith("config"):
            allowed = ("config",)
        elif name.startswith("vidwiz.worker"):
            allowed = ("vidwiz.worker",)
        else:
            continue
        offenders += [(name, i) for i in project_imports if not i.startswith(allowed) and i != "vidwiz"]
    assert not offenders, violations("a module imports beyond its layer", offenders)


PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
elapsed = time.perf_counter() - started
print(json.dumps({{"seconds": elapsed, "modules": len(sys.modules),
                  "loaded": sorted(m for m in sys.modules if m.startswith(("aiohttp", "vidwiz", "apispec", "jwt")))}}))
"""


@pytest.mark.parametrize("module", ["actors.worker", "vidwiz.supervision.tree"])
def test_actors_and_supervisor_load_no_web_code(module):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    loaded = set(report["loaded"])
    print(f"import {module}: {report['seconds']:.3f} s, {report['modules']} modules")  # shown with -s
    assert "aiohttp.web" not in loaded
    assert "vidwiz.system.openapi" not in loaded and "apispec" not in loaded
    assert not {m for m in loaded if is_web(m)}, sorted(m for m in loaded if is_web(m))
