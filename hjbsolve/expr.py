"""Safe, whitelisted formula language for model coefficients, compiled to numba.

Case files give model coefficients as formulas such as ``"-(x - y)/gamma + u"``,
``"x**4/4 - x**2/2"``, ``"where(y > 0, 1, -1)*sqrt(beta)"`` or
``"-A11*(y[0]-x[0]) - A12*(y[1]-x[1])"``.  This module parses them with
``ast.parse(text, mode="eval")``, validates the tree against a small whitelist
and translates it into a numba-compiled scalar function.  No formula text is
ever passed to ``eval``/``exec``: the compiled function is built from an AST
that this module constructs node by node from the validated formula.  To be
compiled once per machine rather than once per process, that tree is also
written (``ast.unparse``) as a module in a cache directory
(``$HJBSOLVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hjbsolve`` or
``~/.cache/hjbsolve``), checked against this process's own tree before every
import, and compiled with numba's ``cache=True`` (see :func:`cache_dir`).

Grammar (a subset of Python expression syntax)::

    expr    := number
             | state
             | parameter | "pi" | "e"
             | call
             | "(" expr ")"
             | ("-" | "+") expr
             | expr ("+" | "-" | "*" | "/" | "**") expr
             | expr cmp expr {cmp expr}        # chained comparisons are supported
    cmp     := "<" | "<=" | ">" | ">=" | "==" | "!="
    number  := int or float literal            # no bool, complex, string, bytes
    state   := v                               # only if dim(v) == 1 (component 0)
             | v "[" i "]"                     # integer literal, 0 <= i < dim(v)
             | v k                             # 1-based alias: x1 == x[0], y2 == y[1]
    call    := f "(" expr {"," expr} ")"       # positional arguments only
    f       := sin | cos | tan | exp | log | sqrt | abs | tanh     (1 argument)
             | minimum | maximum                                   (2 arguments)
             | where                                               (3 arguments)

``v`` ranges over the state variables given to the compiler (usually ``x``,
``y``, ``u``) with their dimensions; a variable of dimension 0 is absent and
may not be used.  A 1-based alias ``v k`` exists only if component ``k``
exists and no parameter or variable has that name.  Parameters are the keys of
the ``params`` dict; they must not shadow a variable, function or constant.

Everything else is refused with :class:`~hjbsolve.errors.ExpressionError`
quoting the offending part of the formula: attribute access, unknown or
``_``-prefixed names, lambdas, comprehensions, strings, f-strings, boolean
literals and ``None``, ``and``/``or``/``not``, ``a if c else b`` (use
``where``), ``//`` ``%`` ``@`` and bitwise operators, subscripts of anything
but a state vector or with a non-literal / out-of-range index, calls of
anything but the functions above, wrong argument counts, keyword or starred
arguments, ``:=``, tuples, lists, dicts and sets.

Semantics: everything is float64 arithmetic.  Comparisons yield 1.0 or 0.0;
``where(c, a, b)`` is ``a`` if ``c != 0`` (NaN counts as true, like
``numpy.where``) else ``b``; both branches are evaluated.  ``minimum`` and
``maximum`` propagate NaN like numpy.  Division by zero, overflow and domain
errors follow IEEE (inf/nan, e.g. ``log(-1)`` is nan, ``1/0`` is inf); no
exception is raised at evaluation time, callers check finiteness themselves.

Parameters are *not* baked into the machine code: they are read from a
``prm`` array (values in the order of the ``params`` dict), so changing a
parameter value does not trigger a recompilation.

Public API
----------
``parse_expression(text, variables, params)`` -> validated ``ast.Expression``
``compile_expression(text, variables, params, where="")`` -> :class:`CompiledExpression`
``compile_vector(texts, variables, params, where="")`` -> :class:`CompiledVector`
``compile_matrix(texts, variables, params, where="")`` -> :class:`CompiledMatrix`

``CompiledExpression.func`` is a numba dispatcher ``f(*states, prm) -> float64``
taking one 1-D float64 array per entry of ``variables`` (in dict order, so
``f(x, y, u, prm)`` for ``{"x": .., "y": .., "u": ..}``) followed by
``prm`` (use ``CompiledExpression.prm``).  It can be called from other jitted
code.  ``evaluate(x=X, y=Y, u=U)`` evaluates on arrays of shape ``(..., dim)``
whose leading axes broadcast against each other.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import math
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numba
import numpy as np

from hjbsolve.errors import ExpressionError

__all__ = [
    "ALLOWED_FUNCTIONS",
    "CONSTANTS",
    "CompiledExpression",
    "CompiledMatrix",
    "CompiledVector",
    "compile_expression",
    "compile_matrix",
    "compile_vector",
    "parse_expression",
]

#: Callable names and their number of (positional) arguments.
ALLOWED_FUNCTIONS: dict[str, int] = {
    "sin": 1,
    "cos": 1,
    "tan": 1,
    "exp": 1,
    "log": 1,
    "sqrt": 1,
    "abs": 1,
    "tanh": 1,
    "minimum": 2,
    "maximum": 2,
    "where": 3,
}

#: Named constants, substituted by their float value.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

#: Maximal formula length (characters) and nesting depth of the syntax tree.
MAX_LENGTH = 10_000
MAX_DEPTH = 200

_NJIT_OPTIONS = dict(error_model="numpy", fastmath=False, nogil=True)


# --------------------------------------------------------------------------
# numba helpers referenced by the generated code
# --------------------------------------------------------------------------


@numba.njit(**_NJIT_OPTIONS)
def _h_bool(c):
    """Truth value of a comparison as 1.0 / 0.0."""
    return 1.0 if c else 0.0


@numba.njit(**_NJIT_OPTIONS)
def _h_where(c, a, b):
    """Value select: ``a`` if ``c`` is nonzero (NaN counts as true) else ``b``."""
    return a if c != 0.0 else b


@numba.njit(**_NJIT_OPTIONS)
def _h_minimum(a, b):
    """``numpy.minimum`` for scalars (NaN propagating)."""
    if a < b:
        return a
    if b <= a:
        return b
    return a + b  # at least one NaN


@numba.njit(**_NJIT_OPTIONS)
def _h_maximum(a, b):
    """``numpy.maximum`` for scalars (NaN propagating)."""
    if a > b:
        return a
    if b >= a:
        return b
    return a + b  # at least one NaN


@numba.njit(**_NJIT_OPTIONS)
def _h_pow(a, b):
    """``a ** b`` in float64.

    A call (rather than an ``ast.Pow`` node) keeps CPython's constant folder
    away from powers of literals, which would turn ``(-8)**(1/3)`` into a
    complex constant.
    """
    return a**b


# Function name in formula -> name of the global used by generated code.
_FUNCTION_GLOBALS: dict[str, str] = {
    "sin": "_h_sin",
    "cos": "_h_cos",
    "tan": "_h_tan",
    "exp": "_h_exp",
    "log": "_h_log",
    "sqrt": "_h_sqrt",
    "abs": "_h_abs",
    "tanh": "_h_tanh",
    "minimum": "_h_minimum",
    "maximum": "_h_maximum",
    "where": "_h_where",
}

# The only globals visible to generated functions (no builtins at all).
_BASE_GLOBALS: dict[str, object] = {
    "__builtins__": {},
    "range": range,
    "_h_sin": math.sin,
    "_h_cos": math.cos,
    "_h_tan": math.tan,
    "_h_exp": math.exp,
    "_h_log": math.log,
    "_h_sqrt": math.sqrt,
    "_h_abs": math.fabs,
    "_h_tanh": math.tanh,
    "_h_minimum": _h_minimum,
    "_h_maximum": _h_maximum,
    "_h_where": _h_where,
    "_h_pow": _h_pow,
    "_h_bool": _h_bool,
}

_BINOPS: dict[type, tuple[str, type | None]] = {
    ast.Add: ("+", ast.Add),
    ast.Sub: ("-", ast.Sub),
    ast.Mult: ("*", ast.Mult),
    ast.Div: ("/", ast.Div),
    ast.Pow: ("**", None),  # translated to _h_pow(a, b)
    ast.FloorDiv: ("//", None),
    ast.Mod: ("%", None),
    ast.MatMult: ("@", None),
    ast.LShift: ("<<", None),
    ast.RShift: (">>", None),
    ast.BitOr: ("|", None),
    ast.BitXor: ("^", None),
    ast.BitAnd: ("&", None),
}
_ALLOWED_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)

_CMPOPS: dict[type, str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}
_ALLOWED_CMPOPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)

# Friendly names for refused node types (anything not listed: its class name).
_REFUSED_KINDS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.Starred: "starred expression",
    ast.NamedExpr: "assignment expression ':='",
    ast.Tuple: "tuple",
    ast.List: "list",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.IfExp: "conditional expression 'a if c else b' (use where(c, a, b))",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Slice: "slice",
}


# --------------------------------------------------------------------------
# validation and translation
# --------------------------------------------------------------------------


def _indices(name: str, dim: int) -> str:
    return f"{name}[0]" if dim == 1 else f"{name}[0]..{name}[{dim - 1}]"


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""



def _why_absent(name: str) -> str:
    """Why a state variable has dimension 0 (the usual cases in hjbsolve models)."""
    return {"u": ": the model has no control set (give model.u_box, u_ball or u_list)",
            "y": ": the model has no fast variable (m = 0)"}.get(name, "")

class _Context:
    """Names visible to a formula: variables, aliases, parameters, constants."""

    def __init__(self, variables: Mapping[str, int], params: Mapping[str, float], where: str):
        pre = _prefix(where)
        if not isinstance(variables, Mapping):
            raise ExpressionError(f"{pre}variables must be a dict name -> dimension")
        if not isinstance(params, Mapping):
            raise ExpressionError(f"{pre}params must be a dict name -> value")
        self.variables: dict[str, int] = {}
        for name, dim in variables.items():
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                raise ExpressionError(f"{pre}invalid variable name {name!r}")
            if name in ALLOWED_FUNCTIONS or name in CONSTANTS:
                raise ExpressionError(
                    f"{pre}variable {name!r} shadows the "
                    f"{'function' if name in ALLOWED_FUNCTIONS else 'constant'} {name!r}"
                )
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
                raise ExpressionError(f"{pre}dimension of variable {name!r} must be an integer >= 0, got {dim!r}")
            self.variables[name] = int(dim)
        self.params: dict[str, float] = {}
        for name, value in params.items():
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                raise ExpressionError(f"{pre}invalid parameter name {name!r}")
            if name in self.variables:
                raise ExpressionError(f"{pre}parameter {name!r} shadows the state variable {name!r}")
            if name in ALLOWED_FUNCTIONS:
                raise ExpressionError(f"{pre}parameter {name!r} shadows the function {name}()")
            if name in CONSTANTS:
                raise ExpressionError(f"{pre}parameter {name!r} shadows the constant {name}")
            try:
                if isinstance(value, (str, bytes)):
                    raise TypeError
                self.params[name] = float(value)
            except (TypeError, ValueError):
                raise ExpressionError(f"{pre}parameter {name!r} must be a real number, got {value!r}") from None
        self.param_index = {name: k for k, name in enumerate(self.params)}
        self.arg_names = {name: f"_a{k}" for k, name in enumerate(self.variables)}
        # 1-based aliases x1, y2, ... (variables and parameters take precedence)
        self.aliases: dict[str, tuple[str, int]] = {}
        for name, dim in self.variables.items():
            for k in range(1, dim + 1):
                alias = f"{name}{k}"
                if alias not in self.params and alias not in self.variables:
                    self.aliases.setdefault(alias, (name, k - 1))
        self._allowed: str | None = None

    def all_names(self) -> list[str]:
        names = [v for v, d in self.variables.items() if d > 0]
        return names + list(self.aliases) + list(self.params) + list(CONSTANTS) + list(ALLOWED_FUNCTIONS)

    def allowed(self) -> str:
        """Human readable summary of what a formula may contain."""
        if self._allowed is None:
            states = []
            for name, dim in self.variables.items():
                if dim == 1:
                    states.append(name)
                elif dim > 1:
                    states.append(f"{name}[0]..{name}[{dim - 1}]")
            parts = ["numbers"] + states
            if self.aliases:
                parts.append("aliases " + " ".join(self.aliases))
            if self.params:
                parts.append("parameters " + " ".join(self.params))
            funcs = " ".join(
                {2: f"{f}(a, b)", 3: f"{f}(cond, a, b)"}.get(n, f) for f, n in ALLOWED_FUNCTIONS.items()
            )
            parts += [
                "+ - * / **",
                "comparisons < <= > >= == !=",
                f"functions {funcs}",
                "constants " + " ".join(CONSTANTS),
            ]
            self._allowed = "allowed: " + ", ".join(parts)
        return self._allowed


class _Translator:
    """Validate a parsed formula and build the equivalent numba-ready tree.

    Every node of the output is created here (never copied from the input),
    so ``compile()`` only ever sees whitelisted constructs: float constants,
    ``_aK[i]`` / ``_prm[k]`` subscripts, ``+ - * /``, unary ``-`` and calls of
    the ``_h_*`` helpers.
    """

    def __init__(self, text: str, ctx: _Context, where: str):
        self.text = text
        self.ctx = ctx
        self.where = where
        self.used: set[str] = set()

    # -- errors ------------------------------------------------------------
    def segment(self, node: ast.AST) -> str:
        seg = None
        try:
            seg = ast.get_source_segment(self.text, node)
        except Exception:  # pragma: no cover - defensive
            seg = None
        if seg is None:
            try:
                seg = ast.unparse(node)
            except Exception:  # pragma: no cover - defensive
                seg = type(node).__name__
        return seg

    def fail(self, msg: str) -> ExpressionError:
        return ExpressionError(f'{_prefix(self.where)}formula "{self.text}": {msg} ({self.ctx.allowed()})')

    def refuse(self, node: ast.AST, kind: str | None = None) -> ExpressionError:
        kind = kind or _REFUSED_KINDS.get(type(node), f"construct {type(node).__name__}")
        return self.fail(f"{kind} {self.segment(node)!r} is not allowed")

    # -- translation -------------------------------------------------------
    def visit(self, node: ast.AST, depth: int = 0) -> ast.expr:
        if depth > MAX_DEPTH:
            raise self.fail(f"formula is nested too deeply (more than {MAX_DEPTH} levels)")
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise self.refuse(node)
        return method(node, depth + 1)

    def visit_Expression(self, node: ast.Expression, depth: int) -> ast.expr:
        return self.visit(node.body, depth)

    def visit_Constant(self, node: ast.Constant, depth: int) -> ast.expr:
        value = node.value
        seg = self.segment(node)
        if isinstance(value, bool):
            raise self.fail(f"boolean literal {seg!r} is not allowed; use 1 or 0")
        if isinstance(value, (str, bytes)):
            raise self.fail(f"string literal {seg!r} is not allowed")
        if isinstance(value, complex):
            raise self.fail(f"complex literal {seg!r} is not allowed")
        if not isinstance(value, (int, float)):
            raise self.fail(f"literal {seg!r} is not allowed")
        try:
            fvalue = float(value)
        except OverflowError:
            raise self.fail(f"number {seg!r} is too large for float64") from None
        return ast.Constant(value=fvalue)

    def visit_UnaryOp(self, node: ast.UnaryOp, depth: int) -> ast.expr:
        if isinstance(node.op, ast.UAdd):
            return self.visit(node.operand, depth)
        if isinstance(node.op, ast.USub):
            return ast.UnaryOp(op=ast.USub(), operand=self.visit(node.operand, depth))
        if isinstance(node.op, ast.Not):
            raise self.refuse(node, "boolean operator 'not' in")
        raise self.refuse(node, "operator '~' in")

    def visit_BinOp(self, node: ast.BinOp, depth: int) -> ast.expr:
        symbol, new_op = _BINOPS.get(type(node.op), ("?", None))
        if not isinstance(node.op, _ALLOWED_BINOPS):
            raise self.refuse(node, f"operator '{symbol}' in")
        left = self.visit(node.left, depth)
        right = self.visit(node.right, depth)
        if isinstance(node.op, ast.Pow):
            return self.helper_call("_h_pow", [left, right])
        return ast.BinOp(left=left, op=new_op(), right=right)

    def visit_BoolOp(self, node: ast.BoolOp, depth: int) -> ast.expr:
        word = "and" if isinstance(node.op, ast.And) else "or"
        raise self.refuse(node, f"boolean operator '{word}' (use where() or products of comparisons) in")

    def visit_Compare(self, node: ast.Compare, depth: int) -> ast.expr:
        for op in node.ops:
            if not isinstance(op, _ALLOWED_CMPOPS):
                raise self.refuse(node, f"comparison '{_CMPOPS.get(type(op), '?')}' in")
        operands = [self.visit(node.left, depth)] + [self.visit(c, depth) for c in node.comparators]
        # a < b < c  ->  _h_bool(a < b) * _h_bool(b < c)   (operands are pure)
        result: ast.expr | None = None
        for k, op in enumerate(node.ops):
            cmp = ast.Compare(left=operands[k], ops=[type(op)()], comparators=[operands[k + 1]])
            term = self.helper_call("_h_bool", [cmp])
            result = term if result is None else ast.BinOp(left=result, op=ast.Mult(), right=term)
        assert result is not None
        return result

    def visit_Name(self, node: ast.Name, depth: int) -> ast.expr:
        name = node.id
        ctx = self.ctx
        if name.startswith("_"):
            kind = "dunder name" if name.startswith("__") else "name"
            raise self.fail(f"{kind} {name!r} is not allowed (names starting with '_' are reserved)")
        if name in ctx.variables:
            dim = ctx.variables[name]
            if dim == 0:
                raise self.fail(f"variable {name!r} is not available in this model (dimension 0){_why_absent(name)}")
            if dim > 1:
                raise self.fail(
                    f"{name!r} has {dim} components; write {name}[0]..{name}[{dim - 1}] "
                    f"or {name}1..{name}{dim}"
                )
            return self.state(name, 0)
        if name in ctx.params:
            return ast.Subscript(
                value=ast.Name(id="_prm", ctx=ast.Load()),
                slice=ast.Constant(value=ctx.param_index[name]),
                ctx=ast.Load(),
            )
        if name in ctx.aliases:
            var, idx = ctx.aliases[name]
            return self.state(var, idx)
        if name in CONSTANTS:
            return ast.Constant(value=CONSTANTS[name])
        if name in ALLOWED_FUNCTIONS:
            raise self.fail(f"function {name!r} must be called, e.g. {name}(...)")
        # helpful message for x3 when x has only 2 components, or x0
        stem = name.rstrip("0123456789")
        if stem != name and stem in ctx.variables:
            dim = ctx.variables[stem]
            if dim == 0:
                raise self.fail(f"unknown name {name!r}: variable {stem!r} is not available (dimension 0)"
                                f"{_why_absent(stem)}")
            raise self.fail(
                f"unknown name {name!r}: {stem!r} has {dim} component(s), "
                f"1-based aliases are {stem}1..{stem}{dim}"
            )
        raise self.fail(f"unknown name {name!r}{self.suggest(name, ctx.all_names())}")

    def visit_Subscript(self, node: ast.Subscript, depth: int) -> ast.expr:
        base = node.value
        if not (isinstance(base, ast.Name) and base.id in self.ctx.variables):
            states = ", ".join(v for v, d in self.ctx.variables.items() if d > 0) or "none"
            raise self.refuse(node, f"subscript (only state vectors can be indexed: {states})")
        name = base.id
        dim = self.ctx.variables[name]
        if dim == 0:
            raise self.fail(f"variable {name!r} is not available in this model (dimension 0){_why_absent(name)}")
        index = node.slice
        if not (
            isinstance(index, ast.Constant) and isinstance(index.value, int) and not isinstance(index.value, bool)
        ):
            raise self.fail(
                f"index {self.segment(index)!r} in {self.segment(node)!r} must be an integer literal "
                f"({_indices(name, dim)})"
            )
        i = index.value
        if not 0 <= i < dim:
            raise self.fail(
                f"index {i} in {self.segment(node)!r} is out of range: {name!r} has {dim} "
                f"component(s), use {_indices(name, dim)}"
            )
        return self.state(name, i)

    def visit_Call(self, node: ast.Call, depth: int) -> ast.expr:
        func = node.func
        if not isinstance(func, ast.Name):
            if type(func) in _REFUSED_KINDS:
                raise self.refuse(func)
            raise self.refuse(node, "call")
        name = func.id
        if name not in ALLOWED_FUNCTIONS:
            if name.startswith("_"):
                raise self.fail(f"call {self.segment(node)!r} is not allowed (names starting with '_' are reserved)")
            if name in self.ctx.variables or name in self.ctx.params or name in CONSTANTS or name in self.ctx.aliases:
                raise self.fail(f"{name!r} is not a function in {self.segment(node)!r}")
            raise self.fail(
                f"call of unknown function {name!r} in {self.segment(node)!r}"
                f"{self.suggest(name, list(ALLOWED_FUNCTIONS))}"
            )
        if node.keywords:
            kw = node.keywords[0]
            raise self.fail(
                f"keyword argument {self.segment(kw)!r} in {self.segment(node)!r} is not allowed "
                "(positional arguments only)"
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(arg, "starred argument")
        arity = ALLOWED_FUNCTIONS[name]
        if len(node.args) != arity:
            raise self.fail(
                f"{name}() takes {arity} argument{'s' if arity != 1 else ''}, got {len(node.args)} "
                f"in {self.segment(node)!r}"
            )
        args = [self.visit(a, depth) for a in node.args]
        return self.helper_call(_FUNCTION_GLOBALS[name], args)

    # -- small builders ----------------------------------------------------
    def state(self, name: str, index: int) -> ast.expr:
        self.used.add(name)
        return ast.Subscript(
            value=ast.Name(id=self.ctx.arg_names[name], ctx=ast.Load()),
            slice=ast.Constant(value=index),
            ctx=ast.Load(),
        )

    @staticmethod
    def helper_call(global_name: str, args: list[ast.expr]) -> ast.expr:
        assert global_name in _BASE_GLOBALS
        return ast.Call(func=ast.Name(id=global_name, ctx=ast.Load()), args=args, keywords=[])

    @staticmethod
    def suggest(name: str, candidates: list[str]) -> str:
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
        if not close:
            return ""
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _parse(text: str, where: str) -> tuple[str, ast.Expression]:
    """Parse ``text`` in eval mode; syntax problems become ExpressionError."""
    pre = _prefix(where)
    if not isinstance(text, str):
        raise ExpressionError(f"{pre}formula must be a string, got {type(text).__name__} {text!r}")
    stripped = text.strip()
    if not stripped:
        raise ExpressionError(f'{pre}formula "{text}" is empty')
    if len(stripped) > MAX_LENGTH:
        raise ExpressionError(f"{pre}formula is too long ({len(stripped)} > {MAX_LENGTH} characters)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        lines = stripped.splitlines() or [stripped]
        lineno = min(max(exc.lineno or 1, 1), len(lines))
        line = lines[lineno - 1]
        col = exc.offset or 0
        if col < 1 or col > len(line):
            at = "at the end" + (f" of line {lineno}" if len(lines) > 1 else "")
        else:
            at = (f"line {lineno}, " if len(lines) > 1 else "") + f"column {col}, near {line[col - 1:][:20]!r}"
        # one line: the CLI prints errors on a single line
        raise ExpressionError(f'{pre}formula "{" ".join(stripped.split())}": syntax error {at}: {exc.msg}') from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise ExpressionError(f'{pre}formula "{stripped}": cannot be parsed: {exc}') from None
    return stripped, tree


def _translate(text: str, variables, params, where: str) -> tuple[str, _Context, ast.Expression, ast.expr, set]:
    ctx = _Context(variables, params, where)
    stripped, tree = _parse(text, where)
    tr = _Translator(stripped, ctx, where)
    try:
        body = tr.visit(tree)
    except RecursionError:
        raise tr.fail("formula is nested too deeply") from None
    return stripped, ctx, tree, body, tr.used


def parse_expression(
    text: str, variables: Mapping[str, int], params: Mapping[str, float], where: str = ""
) -> ast.Expression:
    """Parse and validate a formula.

    Returns the ``ast.Expression`` produced by ``ast.parse(text.strip(),
    mode="eval")`` once every node has been checked against the grammar in
    the module docstring.  Raises :class:`ExpressionError` quoting the
    offending part of the formula otherwise (prefixed by ``where`` if given).
    """
    return _translate(text, variables, params, where)[2]


# --------------------------------------------------------------------------
# code generation (AST objects only; no text is ever compiled)
# --------------------------------------------------------------------------


def _arguments(names: Sequence[str]) -> ast.arguments:
    return ast.arguments(
        posonlyargs=[],
        args=[ast.arg(arg=n) for n in names],
        vararg=None,
        kwonlyargs=[],
        kw_defaults=[],
        kwarg=None,
        defaults=[],
    )


def _function_def(name: str, argnames: Sequence[str], body: list[ast.stmt]) -> ast.FunctionDef:
    fields = dict(name=name, args=_arguments(argnames), body=body, decorator_list=[], returns=None)
    if "type_params" in ast.FunctionDef._fields:  # Python >= 3.12
        fields["type_params"] = []
    return ast.fix_missing_locations(ast.FunctionDef(**fields))


def _make_function(name: str, argnames: Sequence[str], body: list[ast.stmt], glob: dict) -> types.FunctionType:
    """Compile a FunctionDef built from AST nodes into a plain Python function."""
    module = ast.Module(body=[_function_def(name, argnames, body)], type_ignores=[])
    ast.fix_missing_locations(module)
    code = compile(module, filename=f"<hjbsolve.expr {name}>", mode="exec", dont_inherit=True)
    fcode = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    return types.FunctionType(fcode, glob, name)


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


# (text, variables items, parameter names) -> (dispatcher, used variables)
_FUNC_CACHE: dict[tuple, tuple[object, frozenset]] = {}
# (tuple of dispatcher ids, number of variables) -> kernel dispatcher
_KERNEL_CACHE: dict[tuple, object] = {}
# (text, variables items, params items) -> CompiledExpression
_EXPR_CACHE: dict[tuple, "CompiledExpression"] = {}


# --------------------------------------------------------------------------
# on-disk cache of the generated code
#
# numba caches machine code only for functions defined in a real source file. Each generated function (and
# each evaluation kernel with its formulas) is therefore also written, as the unparsed validated tree, to a
# module named after the hash of its text in the cache directory, imported from there and compiled with
# numba's ``cache=True``: a formula is compiled once per machine, not once per process. The file is
# regenerated and compared with what this process generates before every import (a stale or altered file is
# rewritten, atomically); without a writable cache directory the code is compiled in memory as before.

#: header of every generated module: the helper functions the generated code may call, nothing else
_MODULE_HEADER = """\
# Generated by hjbsolve.expr from validated formulas (the whitelisted language); rewritten if it differs.
import math

import numba

from hjbsolve.expr import _h_bool, _h_maximum, _h_minimum, _h_pow, _h_where

_h_sin, _h_cos, _h_tan, _h_exp = math.sin, math.cos, math.tan, math.exp
_h_log, _h_sqrt, _h_abs, _h_tanh = math.log, math.sqrt, math.fabs, math.tanh
_jit = numba.njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
"""

# id(dispatcher) -> its FunctionDef, so that kernels can be generated with the formulas they call
_FUNC_DEFS: dict[int, ast.FunctionDef] = {}


def cache_dir():
    """Directory of the generated formula modules: ``$HJBSOLVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hjbsolve``,
    else ``~/.cache/hjbsolve`` (subfolder ``formulas``); None when it cannot be created or written."""
    env = os.environ.get("HJBSOLVE_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hjbsolve"
    path = base / "formulas"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _cached_module(defs: Sequence[ast.FunctionDef]):
    """Import the module made of ``defs`` (each jitted with ``cache=True``) from the cache directory."""
    folder = cache_dir()
    if folder is None:
        return None
    parts = []
    for fd in defs:
        fd = ast.fix_missing_locations(ast.FunctionDef(**{f: getattr(fd, f) for f in fd._fields}))
        fd.decorator_list = [ast.Name(id="_jit", ctx=ast.Load())]
        parts.append(ast.unparse(fd))
    source = _MODULE_HEADER + "\n\n" + "\n\n\n".join(parts) + "\n"
    name = "hjbsolve_formula_" + hashlib.sha256(source.encode()).hexdigest()[:32]
    path = folder / f"{name}.py"
    try:
        if not path.is_file() or path.read_text() != source:
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module          # numba's cache finds the module of a cached function by name
        spec.loader.exec_module(module)
    except (OSError, UnicodeDecodeError):
        sys.modules.pop(name, None)
        return None
    return module


def _scalar_function(body: ast.expr, ctx: _Context):
    argnames = list(ctx.arg_names.values()) + ["_prm"]
    fd = _function_def("_hjb_formula", argnames, [ast.Return(value=body)])
    module = _cached_module([fd])
    if module is not None:
        func = module._hjb_formula
    else:
        fn = _make_function("_hjb_formula", argnames, [ast.Return(value=body)], dict(_BASE_GLOBALS))
        func = numba.njit(**_NJIT_OPTIONS)(fn)
    _FUNC_DEFS[id(func)] = fd
    return func


def _kernel(funcs: Sequence[object], nvars: int):
    """Generated loop ``out[i, k] = funcs[k](a0[i], ..., prm)`` over all points."""
    key = (tuple(id(f) for f in funcs), nvars)
    kern = _KERNEL_CACHE.get(key)
    if kern is not None:
        return kern
    glob = dict(_BASE_GLOBALS)
    rows = [f"_r{j}" for j in range(nvars)]
    loop_body: list[ast.stmt] = [
        ast.Assign(
            targets=[ast.Name(id=rows[j], ctx=ast.Store())],
            value=ast.Subscript(value=_load(f"_a{j}"), slice=_load("_i"), ctx=ast.Load()),
        )
        for j in range(nvars)
    ]
    for k, f in enumerate(funcs):
        glob[f"_f{k}"] = f
        call = ast.Call(func=_load(f"_f{k}"), args=[_load(r) for r in rows] + [_load("_prm")], keywords=[])
        target = ast.Subscript(
            value=_load("_out"),
            slice=ast.Tuple(elts=[_load("_i"), ast.Constant(value=k)], ctx=ast.Load()),
            ctx=ast.Store(),
        )
        loop_body.append(ast.Assign(targets=[target], value=call))
    shape0 = ast.Subscript(
        value=ast.Attribute(value=_load("_out"), attr="shape", ctx=ast.Load()),
        slice=ast.Constant(value=0),
        ctx=ast.Load(),
    )
    loop = ast.For(
        target=ast.Name(id="_i", ctx=ast.Store()),
        iter=ast.Call(func=_load("range"), args=[shape0], keywords=[]),
        body=loop_body,
        orelse=[],
    )
    argnames = [f"_a{j}" for j in range(nvars)] + ["_prm", "_out"]
    module = None
    if all(id(f) in _FUNC_DEFS for f in funcs):
        defs = []
        for k, f in enumerate(funcs):
            fd = _FUNC_DEFS[id(f)]
            defs.append(_function_def(f"_f{k}", [a.arg for a in fd.args.args], fd.body))
        module = _cached_module(defs + [_function_def("_hjb_kernel", argnames, [loop])])
    if module is not None:
        kern = module._hjb_kernel
    else:
        kern = numba.njit(**_NJIT_OPTIONS)(_make_function("_hjb_kernel", argnames, [loop], glob))
    _KERNEL_CACHE[key] = kern
    return kern


def _readonly(a: np.ndarray) -> np.ndarray:
    """C-contiguous read-only view (one numba specialisation for all inputs)."""
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


class _Evaluable:
    """Shared machinery: input checking, broadcasting and the numba loop."""

    variables: dict[str, int]
    prm: np.ndarray
    used: frozenset
    _funcs: list

    def _run(self, arrays: dict) -> tuple[tuple[int, ...], np.ndarray]:
        unknown = [k for k in arrays if k not in self.variables]
        if unknown:
            raise TypeError(
                f"evaluate() got unknown variable(s) {', '.join(unknown)}; expected some of {', '.join(self.variables)}"
            )
        given: dict[str, np.ndarray] = {}
        for name, dim in self.variables.items():
            value = arrays.get(name)
            if value is None:
                if name in self.used:
                    raise ValueError(f"formula uses {name!r}: pass {name}=array of shape (..., {dim})")
                continue
            a = np.asarray(value, dtype=np.float64)
            if a.ndim == 0 or a.shape[-1] != dim:
                raise ValueError(
                    f"{name} must have shape (..., {dim}) (trailing axis = components), got {a.shape}"
                )
            given[name] = a
        shape = np.broadcast_shapes(*(a.shape[:-1] for a in given.values())) if given else ()
        n = math.prod(shape)
        args = []
        for name, dim in self.variables.items():
            if name in self.used:
                a = given[name]
                if a.shape[:-1] != shape:
                    a = np.broadcast_to(a, shape + (dim,))
                args.append(_readonly(a.reshape(n, dim)))
            else:  # never read by the generated code
                args.append(_readonly(np.empty((n, 0))))
        out = np.empty((n, len(self._funcs)))
        if self._funcs and n:
            _kernel(self._funcs, len(self.variables))(*args, self.prm, out)
        return shape, out


class CompiledExpression(_Evaluable):
    """A compiled scalar formula.

    Attributes
    ----------
    text : the (stripped) formula.
    variables : dict name -> dimension, in argument order of ``func``.
    params : dict name -> value; ``prm`` holds the values in this order.
    func : numba dispatcher ``func(*states, prm) -> float`` (one 1-D float64
        array per variable, e.g. ``func(x, y, u, prm)``).
    used : names of the variables the formula reads.
    """

    def __init__(self, text: str, variables: dict[str, int], params: dict[str, float], func, used: frozenset):
        self.text = text
        self.variables = dict(variables)
        self.params = dict(params)
        self.param_names = tuple(self.params)
        self.prm = _readonly(np.array(list(self.params.values()), dtype=np.float64))
        self.func = func
        self.used = used
        self._funcs = [func]

    @property
    def is_constant(self) -> bool:
        return not self.used

    def evaluate(self, **arrays) -> np.ndarray:
        """Evaluate at points: ``evaluate(x=X, y=Y, u=U)``.

        Each array has shape ``(..., dim)`` (trailing axis = components, a
        trailing axis of length 1 is required for dim 1); leading axes
        broadcast.  Unused / absent variables may be omitted.  Returns a
        float64 array of the broadcast leading shape.
        """
        shape, out = self._run(arrays)
        return out[:, 0].reshape(shape)

    def __repr__(self) -> str:
        return f"CompiledExpression({self.text!r})"


class CompiledVector(_Evaluable):
    """Several formulas evaluated together; ``evaluate`` -> shape (..., m)."""

    def __init__(self, exprs: list[CompiledExpression], variables: dict[str, int], params: dict[str, float]):
        self.exprs = exprs
        self.texts = [e.text for e in exprs]
        self.variables = dict(variables)
        self.params = dict(params)
        self.prm = _readonly(np.array(list(self.params.values()), dtype=np.float64))
        self.used = frozenset().union(*(e.used for e in exprs))
        self._funcs = [e.func for e in exprs]

    def __len__(self) -> int:
        return len(self.exprs)

    def evaluate(self, **arrays) -> np.ndarray:
        shape, out = self._run(arrays)
        return out.reshape(shape + (len(self._funcs),))


class CompiledMatrix(CompiledVector):
    """A matrix of formulas (row-major); ``evaluate`` -> shape (..., r, c)."""

    def __init__(self, exprs, variables, params, rows: int, cols: int):
        super().__init__(exprs, variables, params)
        self.shape = (rows, cols)

    def evaluate(self, **arrays) -> np.ndarray:
        shape, out = self._run(arrays)
        return out.reshape(shape + self.shape)


def compile_expression(
    text: str, variables: Mapping[str, int], params: Mapping[str, float], where: str = ""
) -> CompiledExpression:
    """Validate ``text`` and compile it; see the module docstring for the grammar.

    ``where`` (e.g. ``'cases/foo.toml: model.a'``) prefixes every error
    message.  Results are memoised per process on (text, variables, params);
    the machine code itself depends only on (text, variables, parameter
    names), so changing parameter values does not recompile.  numba compiles
    lazily, on the first call of ``func`` / ``evaluate``.
    """
    try:
        key = (text, tuple(variables.items()), tuple(params.items()))
        hash(key)
    except (AttributeError, TypeError):
        key = None
    if key is not None and key in _EXPR_CACHE:
        return _EXPR_CACHE[key]
    stripped, ctx, _tree, body, used = _translate(text, variables, params, where)
    fkey = (stripped, tuple(ctx.variables.items()), tuple(ctx.params))
    cached = _FUNC_CACHE.get(fkey)
    if cached is None:
        cached = (_scalar_function(body, ctx), frozenset(used))
        _FUNC_CACHE[fkey] = cached
    func, used_vars = cached
    result = CompiledExpression(stripped, ctx.variables, ctx.params, func, used_vars)
    if key is not None:
        _EXPR_CACHE[key] = result
    return result


def compile_vector(
    texts: Sequence[str], variables: Mapping[str, int], params: Mapping[str, float], where: str = ""
) -> CompiledVector:
    """Compile a vector coefficient; ``evaluate`` returns shape (..., len(texts))."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ExpressionError(f"{_prefix(where)}expected a list of formulas, got {texts!r}")
    exprs = [
        compile_expression(t, variables, params, f"{where}[{k}]" if where else f"component [{k}]")
        for k, t in enumerate(texts)
    ]
    ctx = _Context(variables, params, where)
    return CompiledVector(exprs, ctx.variables, ctx.params)


def compile_matrix(
    texts: Sequence[Sequence[str]], variables: Mapping[str, int], params: Mapping[str, float], where: str = ""
) -> CompiledMatrix:
    """Compile a matrix coefficient (list of rows); ``evaluate`` -> shape (..., r, c)."""
    pre = _prefix(where)
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise ExpressionError(f"{pre}expected a non-empty list of rows of formulas, got {texts!r}")
    rows = []
    for row in texts:
        if isinstance(row, str) or not isinstance(row, Sequence):
            raise ExpressionError(f"{pre}expected a list of rows of formulas, got row {row!r}")
        rows.append(list(row))
    ncols = len(rows[0])
    if any(len(r) != ncols for r in rows):
        raise ExpressionError(f"{pre}matrix rows have different lengths: {[len(r) for r in rows]}")
    exprs = [
        compile_expression(t, variables, params, f"{where}[{i}][{j}]" if where else f"entry [{i}][{j}]")
        for i, row in enumerate(rows)
        for j, t in enumerate(row)
    ]
    ctx = _Context(variables, params, where)
    return CompiledMatrix(exprs, ctx.variables, ctx.params, len(rows), ncols)
