"""lib/durable_mqtt/__init__.pyi follows the code: every public method of
MQTTClient with the same parameters and defaults, and every name the
package exports. (Read with ast: nothing is imported.)"""
import ast

from conftest import ROOT

PKG = ROOT / "lib" / "durable_mqtt"


def _tree(name):
    return ast.parse((PKG / name).read_text())


def _signature(fn):
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    kw = [ast.unparse(d) if d is not None else None for d in a.kw_defaults]
    return ([(p.arg, d) for p, d in zip(pos, defaults)],
            [(p.arg, d) for p, d in zip(a.kwonlyargs, kw)])


def _methods(tree, cls="MQTTClient"):
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {f.name: _signature(f) for f in node.body
                    if isinstance(f, ast.FunctionDef) and (not f.name.startswith("_") or f.name == "__init__")}
    raise AssertionError("no class " + cls)


def test_stub_methods_match_client():
    code = _methods(_tree("client.py"))
    stub = _methods(_tree("__init__.pyi"))
    assert sorted(stub) == sorted(code)
    for name in code:
        assert stub[name] == code[name], name


def test_stub_exports_match_package():
    exported = set()
    for node in _tree("__init__.py").body:
        if isinstance(node, ast.ImportFrom):
            exported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Assign):
            exported |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    stubbed = set()
    for node in _tree("__init__.pyi").body:
        if isinstance(node, ast.ClassDef):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
    assert {n for n in stubbed if not n.startswith("_") or n == "__version__"} == exported
