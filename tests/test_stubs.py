"""The type stubs (lib/durable_mqtt/*.pyi) follow the code. Read with ast:
nothing is imported.

- every public module has a stub, and only those; each stub declares the
  module's public classes and functions, no more, no fewer;
- every public method of MQTTClient, RobustClient, AsyncClient and FileLog
  with the same parameters, kinds, defaults and async-ness as the code.
  Where the code takes **kw and hands it on (MQTTClient -> configure(),
  RobustClient -> MQTTClient, AsyncClient -> RobustClient, subscribe ->
  subscription), the stub spells the keywords out: the test follows the
  call, drops what the call already passes, and applies kw.setdefault();
- every attribute a stub declares is one the code sets;
- errors.pyi: every class with its base, every ERR_* code with its value;
- __init__.pyi exports what __init__.py does;
- ssl is typed as an SSLContext-like protocol: CPython's ssl.SSLContext
  satisfies it, True does not, and the client refuses a non-context with a
  TypeError at construction, on the unix port.
"""
import ast
import importlib.util
import ssl as cpython_ssl
import sys
import types

from conftest import ROOT, run_mp

PKG = ROOT / "lib" / "durable_mqtt"
PUBLIC = ("__init__", "aio", "client", "errors", "filelog", "robust")
CLASSES = {"client": "MQTTClient", "robust": "RobustClient", "aio": "AsyncClient", "filelog": "FileLog"}


def _tree(name):
    return ast.parse((PKG / name).read_text())


def _module_defs(tree):
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
    # A class made with type(name, bases, {}) (errors.py: no class body's dict)
    for n in tree.body:
        if (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
                and n.value.func.id == "type" and len(n.value.args) == 3):
            defs[n.targets[0].id] = n
    return defs


def _class(mod, name, stub=False):
    node = _module_defs(_tree(mod + (".pyi" if stub else ".py")))[name]
    assert isinstance(node, ast.ClassDef)
    return node


def _methods(cls):
    return {f.name: f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (not f.name.startswith("_") or f.name == "__init__")}


def _all_methods(cls):
    return {f.name: f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}


# ------------------------------------------------------------------ signatures

class Sig:
    """Positional parameters [(name, default)], keyword-only [(name, default)];
    defaults as source text, None when required."""

    def __init__(self, pos, kw):
        self.pos, self.kw = list(pos), list(kw)

    def __eq__(self, other):
        return (self.pos, self.kw) == (other.pos, other.kw)

    def __repr__(self):
        return "Sig(pos=%r, kw=%r)" % (self.pos, self.kw)


def _plain(fn):
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    kw = [ast.unparse(d) if d is not None else None for d in a.kw_defaults]
    return Sig([(p.arg, d) for p, d in zip(pos, defaults)], [(p.arg, d) for p, d in zip(a.kwonlyargs, kw)])


def _resolve_callee(call, owner):
    """The function a **kw is handed to: super().f, a class of the package
    (its __init__), a function of the package, or c.f / self.client.f (a
    method of the client classes). Returns (function node, its owner, how
    many leading parameters the call binds implicitly)."""
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and getattr(f.value.func, "id", "") == "super":
        base = owner["bases"][0]
        return _effective_owner(base, f.attr), 1
    if isinstance(f, ast.Name):
        for mod, cls in CLASSES.items():
            if f.id == cls:
                return (_all_methods(_class(mod, cls))["__init__"], _owner(mod, cls)), 1
        for p in sorted(PKG.glob("*.py")):
            defs = _module_defs(ast.parse(p.read_text()))
            if f.id in defs and isinstance(defs[f.id], ast.FunctionDef):
                return (defs[f.id], None), 0
    if isinstance(f, ast.Attribute):
        for mod in ("robust", "client"):
            if f.attr in _all_methods(_class(mod, CLASSES[mod])):
                return _effective_owner(_owner(mod, CLASSES[mod]), f.attr), 1
    raise AssertionError("cannot follow **kw into %s" % ast.unparse(call))


def _owner(mod, cls):
    node = _class(mod, cls)
    bases = []
    for b in node.bases:
        name = ast.unparse(b)
        bases += [_owner(m, c) for m, c in CLASSES.items() if c == name]
    return {"mod": mod, "cls": cls, "node": node, "bases": bases}


def _effective_owner(owner, name):
    """(method node, owner) of `name`, looked up along the bases."""
    m = _all_methods(owner["node"]).get(name)
    if m is not None:
        return m, owner
    for b in owner["bases"]:
        return _effective_owner(b, name)
    raise AssertionError("no method %s" % name)


def effective(fn, owner):
    """The signature a caller sees: fn's own, plus the keywords its **kw
    reaches in the function it hands them to."""
    sig = _plain(fn)
    kwarg = fn.args.kwarg
    if kwarg is None:
        return sig
    calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)
             and any(k.arg is None and getattr(k.value, "id", None) == kwarg.arg for k in c.keywords)]
    assert calls, "%s takes **%s and hands it to nobody" % (fn.name, kwarg.arg)
    (callee, cowner), implicit = _resolve_callee(calls[0], owner)
    target = effective(callee, cowner)
    bound = len(calls[0].args) + implicit
    passed = {k.arg for k in calls[0].keywords if k.arg}
    names = {n for n, _ in sig.pos + sig.kw}
    overrides = {}
    for c in ast.walk(fn):       # kw.setdefault("clean_session", False)
        if (isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "setdefault"
                and getattr(c.func.value, "id", None) == kwarg.arg):
            overrides[c.args[0].value] = ast.unparse(c.args[1])
    extra = [(n, overrides.get(n, d)) for n, d in target.pos[bound:] + target.kw
             if n not in passed and n not in names]
    return Sig(sig.pos, sig.kw + extra)


def _check_class(mod):
    cls = CLASSES[mod]
    owner = _owner(mod, cls)
    code = _methods(owner["node"])
    stub = _methods(_class(mod, cls, stub=True))
    assert sorted(stub) == sorted(code), "%s: stub %s, code %s" % (cls, sorted(stub), sorted(code))
    for name, fn in code.items():
        want = effective(fn, owner)
        got = _plain(stub[name])
        assert got == want, "%s.%s: stub %r, code %r" % (cls, name, got, want)
        assert type(stub[name]) is type(fn), "%s.%s: async in one, not in the other" % (cls, name)


def test_every_public_module_has_a_stub():
    stubs = sorted(p.stem for p in PKG.glob("*.pyi"))
    assert stubs == sorted(PUBLIC)
    for mod in PUBLIC:
        assert (PKG / (mod + ".py")).is_file()


def test_stubs_declare_each_modules_public_names():
    for mod in PUBLIC:
        if mod == "__init__":
            continue
        code = {n for n in _module_defs(_tree(mod + ".py")) if not n.startswith("_")}
        stub = {n for n in _module_defs(_tree(mod + ".pyi")) if not n.startswith("_")}
        assert stub == code, mod


def test_mqttclient_stub_matches_the_code():
    _check_class("client")


def test_robustclient_stub_matches_the_code():
    _check_class("robust")


def test_asyncclient_stub_matches_the_code():
    _check_class("aio")


def test_filelog_stub_matches_the_code():
    _check_class("filelog")


def test_the_constructors_keywords_are_the_documented_ones():
    """The contract (../shared/API.md and the brief) as the stub gives it:
    what the **kw forwarding resolves to is spelled out, in order."""
    init = effective(_all_methods(_class("client", "MQTTClient"))["__init__"], _owner("client", "MQTTClient"))
    assert [n for n, _ in init.pos] == ["self", "client_id", "server", "port", "user", "password", "keepalive",
                                        "ssl"]
    kw = dict(init.kw)
    for name, default in (("version", "4"), ("clean_session", "True"), ("session_expiry", "None"),
                          ("session_file", "None"), ("buf_size", "1024"), ("max_inflight", "16"),
                          ("receive_max", "8"), ("outbox_size", "32")):
        assert kw[name] == default, name
    robust = dict(effective(_all_methods(_class("robust", "RobustClient"))["__init__"],
                            _owner("robust", "RobustClient")).kw)
    assert robust["clean_session"] == "False"          # kw.setdefault in RobustClient
    aio = dict(effective(_all_methods(_class("aio", "AsyncClient"))["__init__"], _owner("aio", "AsyncClient")).kw)
    assert aio["on_up"] == "None" and aio["on_down"] == "None"  # called with the AsyncClient


def _stores_to_self(tree):
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.args.args and fn.args.args[0].arg == "self":
            for node in ast.walk(fn):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "self" and isinstance(node.ctx, ast.Store)):
                    out.add(node.attr)
        if isinstance(fn, ast.ClassDef):
            for node in fn.body:
                if isinstance(node, ast.Assign):
                    out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


def test_stub_attributes_exist_in_the_code():
    # MQTTClient's attributes are set by the modules its constructor runs
    # (configure.py, load.py: functions of `self`), so all modules count.
    everywhere = set()
    for p in PKG.glob("*.py"):
        everywhere |= _stores_to_self(ast.parse(p.read_text()))
    for mod, cls in CLASSES.items():
        stub = _class(mod, cls, stub=True)
        declared = {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign)}
        assert declared, cls
        assert declared <= everywhere, "%s: %s" % (cls, sorted(declared - everywhere))
    want = {"MQTTClient": {"server", "port", "keepalive", "clean_session", "buf_size", "receive_max", "timeout_ms",
                           "resubscribe", "session_present", "last_event"},
            "RobustClient": {"last_error", "link_downs", "connect_failures"},
            "AsyncClient": {"up", "down", "client", "dropped_messages"}}
    for mod, cls in CLASSES.items():
        stub = _class(mod, cls, stub=True)
        declared = {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign)}
        assert want.get(cls, set()) <= declared, cls


def test_errors_stub_has_every_class_and_code():
    code, stub = _tree("errors.py"), _tree("errors.pyi")
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in code.body if isinstance(n, ast.ClassDef)}
    # (errors.py makes them with type(name, bases, {}))
    classes.update({n.targets[0].id: [ast.unparse(b) for b in n.value.args[1].elts] for n in code.body
                    if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                    and isinstance(n.value.func, ast.Name) and n.value.func.id == "type"})
    sclasses = {n.name: [ast.unparse(b) for b in n.bases] for n in stub.body if isinstance(n, ast.ClassDef)}
    assert sclasses == classes
    codes = {t.id: ast.literal_eval(n.value) for n in code.body if isinstance(n, ast.Assign)
             for t in n.targets if t.id.startswith("ERR_")}
    scodes = {n.target.id: ast.literal_eval(n.value) for n in stub.body
              if isinstance(n, ast.AnnAssign) and n.target.id.startswith("ERR_")}
    assert scodes == codes
    assert codes == {"ERR_PROTOCOL": -2, "ERR_TOO_LARGE": -3, "ERR_TIMEOUT": -4, "ERR_CLOSED": -5,
                     "ERR_NOT_CONNECTED": -6, "ERR_FULL": -7, "ERR_SESSION": -8}
    for n in stub.body:
        if isinstance(n, ast.AnnAssign) and n.target.id.startswith("ERR_"):
            assert ast.unparse(n.annotation) == "Final", n.target.id


def test_init_stub_exports_match_package():
    exported = set()
    for node in _tree("__init__.py").body:
        if isinstance(node, ast.ImportFrom):
            exported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Assign):
            exported |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    stubbed = set()
    for node in _tree("__init__.pyi").body:
        if isinstance(node, ast.ImportFrom):
            # `from .x import A as A`: the explicit re-export form of stubs
            assert all(a.asname == a.name for a in node.names), ast.unparse(node)
            stubbed |= {a.asname for a in node.names}
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
    assert stubbed == exported


def _load_stub(name, mod_name):
    """Execute a stub in CPython as a module (stubs are valid Python)."""
    spec = importlib.util.spec_from_file_location(mod_name, PKG / name,
                                                  loader=importlib.machinery.SourceFileLoader(mod_name, str(PKG / name)))
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def test_ssl_is_typed_as_an_sslcontext_protocol():
    """The stubs say ssl: Optional[_SSLContext], a protocol with
    wrap_socket(sock, *, server_hostname=...): an ssl.SSLContext has it,
    True does not (a type checker refuses ssl=True)."""
    import typing
    pkg = types.ModuleType("stubpkg")
    pkg.__path__ = [str(PKG)]
    sys.modules["stubpkg"] = pkg
    try:
        _load_stub("filelog.pyi", "stubpkg.filelog")
        client = _load_stub("client.pyi", "stubpkg.client")
        hints = typing.get_type_hints(client.MQTTClient.__init__)
        proto = client._SSLContext
        assert hints["ssl"] == typing.Optional[proto]
        assert getattr(proto, "_is_protocol", False)
        checkable = typing.runtime_checkable(proto)
        assert isinstance(cpython_ssl.create_default_context(), checkable)
        assert not isinstance(True, checkable) and not isinstance("ca.der", checkable)
        for mod, cls in (("robust", "RobustClient"), ("aio", "AsyncClient")):
            stub = _class(mod, cls, stub=True)
            init = _methods(stub)["__init__"]
            ann = [a.annotation for a in init.args.args if a.arg == "ssl"][0]
            assert ast.unparse(ann) == "Optional[_SSLContext]", cls
    finally:
        for k in [k for k in sys.modules if k == "stubpkg" or k.startswith("stubpkg.")]:
            del sys.modules[k]


def test_a_non_context_ssl_fails_at_construction():
    r = run_mp(r"""
from durable_mqtt import MQTTClient
from durable_mqtt.robust import RobustClient
import ssl
for cls in (MQTTClient, RobustClient):
    for bad in (True, 1, 'ca.der'):
        try:
            cls('x', '127.0.0.1', ssl=bad)
            print('accepted', cls.__name__, bad)
        except TypeError as e:
            print('TypeError', e)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c = MQTTClient('x', '127.0.0.1', ssl=ctx)
print('port', c.port)
""")
    lines = r.stdout.splitlines()
    assert lines[:6] == ["TypeError ssl must be an ssl.SSLContext"] * 6, r.stdout
    assert lines[6] == "port 8883"
