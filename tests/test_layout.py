"""The tree's promises: every C++ file opens with a comment saying what it holds, every Python module with a
docstring; only csrc/bindings includes pybind11; benchmark-only native code stays out of _core; and no import
cycle among fastconv's modules, counting imports made inside functions too."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "python" / "fastconv"
CSRC = ROOT / "csrc"


def test_every_cpp_file_says_what_it_holds():
    files = sorted(p for p in CSRC.rglob("*") if p.suffix in (".cpp", ".hpp"))
    assert len(files) > 40
    bare = [str(p.relative_to(ROOT)) for p in files if not p.read_text().lstrip().startswith("//")]
    assert not bare, bare


def test_every_python_module_has_a_docstring():
    bare = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not bare, bare


def test_only_bindings_include_pybind11():
    offenders = [str(p.relative_to(ROOT)) for p in CSRC.rglob("*") if p.suffix in (".cpp", ".hpp")
                 and "pybind11" in p.read_text() and p.parent.name != "bindings"]  # fmt: skip
    assert not offenders, offenders


def test_benchmark_code_is_not_in_core():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    core_sources = cmake[cmake.index("add_library(fastconv_kernels") : cmake.index("${_isa_objects})")]
    assert "csrc/bench/" not in core_sources
    assert "csrc/bench/peer_cpuid.cpp" in cmake[cmake.index("pybind11_add_module(_bench_native") :]
    from fastconv import _bench_native, _core

    assert not hasattr(_core, "_mask_avx512_cpuid") and hasattr(_bench_native, "mask_avx512_cpuid")


def _module_graph():
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    known = set(mods) | {"fastconv._core", "fastconv._bench_native"}
    graph = {m: set() for m in mods}
    for name, p in mods.items():
        package = name if p.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                dep = sub if sub in known else target
                if dep in mods and dep != name:
                    graph[name].add(dep)
    return graph


def test_no_import_cycle():
    graph = _module_graph()
    assert "fastconv.layers" in graph and "fastconv._sizes" in graph["fastconv.layers"]
    state, cycle = {}, []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, cycle
