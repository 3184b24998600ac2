"""The import direction of the layers, kept by a test rather than by convention.

    protos <- domain, jsonmap <- store <- calls <- rpc <- rest <- openapi, settings <- assembly,
    runtime, config, cli, testing

A module may import from its own layer and the layers below it, never above. The store
knows no order rules, and nothing past the command line sees its parsed flags.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"

# The layer of each top-level part of the package; a lower number is further in.
LAYERS: dict[str, int] = {
    "gen": 0,
    "protos": 0,
    "domain": 1,
    "jsonmap": 1,
    "store": 2,
    "calls": 3,
    "events": 3,
    "demo": 3,
    "seed": 3,
    "rpc": 4,
    "observability": 4,
    "rest": 5,
    "openapi": 6,
    "settings": 6,
    "assembly": 7,
    "descriptors": 7,
    "runtime": 7,
    "testing": 7,
    "config": 8,
    "cli": 8,
    "__main__": 8,
    "__init__": 0,
}
RULE_MODULES = ("gateway.domain.lifecycle", "gateway.domain.targets", "gateway.domain.tracking",
                "gateway.domain.validation")  # fmt: skip
COMMAND_LINE = ("config.py", "cli.py")


def _modules() -> list[Path]:
    return sorted(p for p in GATEWAY.rglob("*.py") if "gen" not in p.relative_to(GATEWAY).parts[:1])


def _part(module_path: Path) -> str:
    return module_path.relative_to(GATEWAY).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    """The gateway modules `path` imports, by dotted name."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name == "gateway" or name.startswith("gateway.")]


def test_every_part_of_the_package_has_a_layer() -> None:
    assert {_part(p) for p in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(GATEWAY)))
def test_imports_point_inwards(path: Path) -> None:
    own = LAYERS[_part(path)]
    outward = []
    for name in _imports(path):
        parts = name.split(".")
        if len(parts) < 2:
            continue
        layer = LAYERS.get(parts[1])
        if layer is not None and layer > own:
            outward.append(name)
    assert outward == [], f"{path.name} (layer {own}) imports outward: {outward}"


@pytest.mark.parametrize("path", sorted((GATEWAY / "store").glob("*.py")), ids=lambda p: p.name)
def test_the_store_imports_no_order_rule(path: Path) -> None:
    assert [n for n in _imports(path) if n.startswith(RULE_MODULES)] == []


def test_no_parsed_flags_past_the_command_line() -> None:
    seen = [
        str(p.relative_to(GATEWAY))
        for p in _modules()
        if p.name not in COMMAND_LINE and ("argparse" in p.read_text() or "Namespace" in p.read_text())
    ]
    assert seen == []


@pytest.mark.parametrize(
    "module", ["gateway.domain.lifecycle", "gateway.domain", "gateway.jsonmap", "gateway.calls.orders"]
)
def test_the_domain_and_the_json_mapping_load_no_grpc(module: str) -> None:
    """In a fresh interpreter, since this one has loaded grpc long ago."""
    check = f"import {module}, sys; assert 'grpc' not in sys.modules, sorted(m for m in sys.modules if 'grpc' in m)"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)


def test_the_tests_stack_and_serve_share_one_assembly() -> None:
    import gateway.assembly
    import gateway.runtime
    import gateway.testing

    assert gateway.testing.assemble is gateway.assembly.assemble
    assert gateway.runtime.assemble is gateway.assembly.assemble
