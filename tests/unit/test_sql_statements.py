"""No SQL is built from values: every statement pypgflow runs is a named block of an engine's
queries.sql (or a schema script, a migration), loaded once, or a constant; values travel as
bound parameters. Read from the source (the AST of every module of src/pypgflow):

- a driver call (``execute``, ``executemany``, ``executescript``, ``copy``, ``stream``) takes a
  statement: a string constant, the loader's ``self._q(name)``, ``self._compose(text)`` (a file's
  text with its schema and channels as identifiers), or a name or attribute never bound to a
  string built at run time;
- the engines' statement helpers (``_fetch``, ``_execute``, ``_submit``, ``_q``), given a name
  made of constants, name a block that the engine's queries.sql defines (both engines', in the
  modules they share);
- nowhere is SQL text made by an f-string, ``%``, ``.format()``, ``.join()`` or ``+``.

The checker is tested on snippets that break each rule, so that it can fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pypgflow"
DRIVER_CALLS = {"execute", "executemany", "executescript", "copy", "stream"}
NAMED_HELPERS = {"_fetch", "_execute", "_submit", "_q"}
STATEMENT_SOURCES = {"_q", "_compose"}  # self._q(name): the loaded block; _compose: a file's text
SQL_TEXT = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|"
    r"SCHEMA)|DROP\s+(TABLE|INDEX|SCHEMA)|ALTER\s+TABLE|TRUNCATE\b|COPY\s+\S+|LISTEN\s|NOTIFY\s|"
    r"PRAGMA\s|WHERE\s+\S+\s*=)",
    re.DOTALL,  # SQL's keywords in capitals, as every statement here writes them
)


def builds_a_string(node: ast.AST) -> bool:
    """An expression that makes text at run time: f-string, %, +, .format(), .join(), str()."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in {"format", "join", "replace"}:
            # psycopg's sql.SQL(...).format(...) composes identifiers, not text: allowed when
            # its receiver is not text itself
            return not (
                func.attr == "format"
                and isinstance(func.value, ast.Call)
                and _called_name(func.value) == "SQL"
            )
        if isinstance(func, ast.Name) and func.id == "str":
            return True
    return False


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _literal_text(node: ast.AST) -> str:
    """The constant text inside a string-building expression."""
    return " ".join(
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


class Checker(ast.NodeVisitor):
    """Collects every breach of the rules in one module."""

    def __init__(self, tree: ast.Module, where: str, blocks: set[str] | None = None) -> None:
        self.where = where
        self.blocks = blocks if blocks is not None else set()  # the statements it may name
        self.problems: list[str] = []
        self.function_bindings: list[dict[str, list[ast.AST]]] = []
        # every value assigned to an attribute of that name anywhere in the module
        self.attribute_values: dict[str, list[ast.AST]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and node.value is not None:
                        self.attribute_values.setdefault(target.attr, []).append(node.value)

    def problem(self, node: ast.AST, what: str) -> None:
        self.problems.append(f"{self.where}:{getattr(node, 'lineno', '?')}: {what}")

    # -- scopes -----------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        bindings: dict[str, list[ast.AST]] = {}
        for inner in ast.walk(node):
            if isinstance(inner, ast.Assign):
                for target in inner.targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            bindings.setdefault(name.id, []).append(inner.value)
            elif isinstance(inner, ast.AugAssign) and isinstance(inner.target, ast.Name):
                grown = ast.BinOp(left=inner.target, op=inner.op, right=inner.value)
                bindings.setdefault(inner.target.id, []).append(grown)
            elif (
                isinstance(inner, ast.AnnAssign)
                and isinstance(inner.target, ast.Name)
                and inner.value is not None
            ):
                bindings.setdefault(inner.target.id, []).append(inner.value)
            elif isinstance(inner, ast.For | ast.AsyncFor | ast.comprehension):
                for name in ast.walk(inner.target):
                    if isinstance(name, ast.Name):
                        bindings.setdefault(name.id, []).append(inner.iter)
            elif isinstance(inner, ast.NamedExpr):
                bindings.setdefault(inner.target.id, []).append(inner.value)
        self.function_bindings.append(bindings)
        self.generic_visit(node)
        self.function_bindings.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def bound_values(self, name: str) -> list[ast.AST]:
        return self.function_bindings[-1].get(name, []) if self.function_bindings else []

    # -- the rules --------------------------------------------------------------------------

    def is_statement(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return True
        if isinstance(node, ast.IfExp):
            return self.is_statement(node.body, seen) and self.is_statement(node.orelse, seen)
        if isinstance(node, ast.Call) and _called_name(node) in STATEMENT_SOURCES:
            return True
        if isinstance(node, ast.Name):
            if node.id in seen:
                return True
            values = self.bound_values(node.id)
            return all(
                not builds_a_string(v) and self.is_statement_or_opaque(v, seen | {node.id})
                for v in values
            )
        if isinstance(node, ast.Attribute):
            values = self.attribute_values.get(node.attr, [])
            return all(not builds_a_string(v) and self.is_statement_or_opaque(v) for v in values)
        return False

    def is_statement_or_opaque(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> bool:
        """A statement, or a value whose text this module does not build (a parameter, a
        function's result, a loop over those)."""
        if builds_a_string(node):
            return False
        if isinstance(node, ast.Name | ast.IfExp):
            return self.is_statement(node, seen)
        return True

    def constant_names(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> set[str] | None:
        """The statement names ``node`` can be, when it is made of constants only (else None:
        a name chosen by a suffix or a table lookup is still only a name, and a name that is
        not a block fails at the lookup)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            body, orelse = self.constant_names(node.body, seen), self.constant_names(node.orelse)
            return None if body is None or orelse is None else body | orelse
        if isinstance(node, ast.Name) and node.id not in seen:
            values = self.bound_values(node.id)
            found = [self.constant_names(v, seen | {node.id}) for v in values]
            if values and all(f is not None for f in found):
                return set().union(*(f for f in found if f is not None))
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = _called_name(node)
        if isinstance(node.func, ast.Attribute) and name in DRIVER_CALLS:
            statement = node.args[0] if node.args else None
            if statement is None:
                statement = next((k.value for k in node.keywords if k.arg == "query"), None)
            if statement is not None and not self.is_statement(statement):
                self.problem(node, f".{name}() is given SQL built at run time")
        if (
            isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
            and name in NAMED_HELPERS
        ):
            position = 0 if name == "_q" else 1
            names = self.constant_names(node.args[position]) if len(node.args) > position else None
            for unknown in sorted((names or set()) - self.blocks):
                self.problem(node, f"self.{name}() names {unknown!r}, which no queries.sql defines")
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.check_text(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if builds_a_string(node):
            self.check_text(node)
        self.generic_visit(node)

    def check_text(self, node: ast.AST) -> None:
        if SQL_TEXT.search(_literal_text(node)):
            self.problem(node, "SQL text is built by string formatting")

    def visit_Expr(self, node: ast.Expr) -> None:  # docstrings and bare strings: not code
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        pass

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if (
                node.func.attr in {"format", "join"}
                and isinstance(receiver, ast.Constant)
                and isinstance(receiver.value, str)
            ):
                self.check_text(node)
        super().generic_visit(node)


def problems_in(source: str, where: str = "<snippet>", blocks: set[str] | None = None) -> list[str]:
    tree = ast.parse(source)
    checker = Checker(tree, where, blocks if blocks is not None else SNIPPET_BLOCKS)
    checker.visit(tree)
    return checker.problems


SNIPPET_BLOCKS = {"claim", "run", "runs"}


def blocks_of(engine: str) -> set[str]:
    text = (SRC / "engines" / engine / "queries.sql").read_text()
    return set(re.findall(r"^-- name: (\w+)\s*$", text, re.MULTILINE))


def test_no_module_builds_sql_from_values() -> None:
    """Each engine's modules name its own blocks; the shared ones, blocks both engines have."""
    postgres, sqlite = blocks_of("postgres"), blocks_of("sqlite")
    assert len(postgres) > 50
    assert len(sqlite) > 50
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 50  # the scan reads the package, not an empty directory
    found = []
    for path in modules:
        parts = path.relative_to(SRC).parts
        blocks = (
            postgres if "postgres" in parts else sqlite if "sqlite" in parts else postgres & sqlite
        )
        found += problems_in(path.read_text(), str(path.relative_to(SRC)), blocks)
    assert found == []


def test_the_scan_sees_the_engines_statements() -> None:
    """What the scan judges is really there: the engines run their statements through these."""
    engines = "".join(p.read_text() for p in (SRC / "engines").rglob("*.py"))
    for call in ("self._q(name)", ".execute(", ".copy(", "self._fetch(", "self._execute("):
        assert call in engines, call


BAD = {
    "f-string": "conn.execute(f\"SELECT * FROM runs WHERE id = '{run_id}'\")",
    "concatenation": 'conn.execute("DELETE FROM runs WHERE id = " + run_id)',
    "percent": "cursor.execute(\"UPDATE runs SET status = '%s'\" % status)",
    "format": 'conn.execute("SELECT {} FROM runs".format(column))',
    "bound first": 'def f(conn, x):\n    query = f"DELETE FROM runs WHERE id = {x}"\n'
    "    conn.execute(query)",
    "bound then grown": 'def f(conn, x):\n    query = "SELECT id FROM runs"\n'
    '    query += " WHERE id = " + x\n    conn.execute(query)',
    "copy": 'cursor.copy(f"COPY {table} FROM STDIN")',
    "attribute": 'class E:\n    def __init__(self, s):\n        self.q = "LISTEN " + s\n'
    "    def go(self, conn):\n        conn.execute(self.q)",
    "sql for a name": "class E:\n    def go(self, conn, x):\n"
    '        return self._fetch(conn, f"SELECT id FROM runs WHERE id = {x}")',
    "unknown name": 'class E:\n    def go(self, conn):\n        return self._fetch(conn, "no_such_block")',
    "unknown chosen": 'class E:\n    def go(self, conn, many):\n        name = "runs" if many else "nope"\n'
    "        return self._q(name)",
    "text built, run elsewhere": 'statement = "DELETE FROM " + table + " WHERE id = %s"',
    "join": 'conn.executescript(";".join(["DROP TABLE runs", extra]))',
}


@pytest.mark.parametrize("snippet", BAD.values(), ids=BAD.keys())
def test_the_scan_finds_sql_built_from_values(snippet: str) -> None:
    assert problems_in(snippet) != []


GOOD = {
    "constant": 'conn.execute("BEGIN IMMEDIATE")',
    "loader": 'class E:\n    def go(self, conn, p):\n        conn.execute(self._q("claim"), p)',
    "helper": 'class E:\n    def go(self, conn, x):\n        self._fetch(conn, "run", {"id": x})',
    "chosen name": 'class E:\n    def go(self, conn, many):\n        name = "runs" if many else "run"\n'
    "        self._execute(conn, name, {})",
    "returned name": "class E:\n    def go(self, conn, r):\n        statement, params = pick(r)\n"
    "        self._fetch(conn, statement, params)",
    "composed file": "class E:\n    def go(self, conn, script):\n        conn.execute(self._compose(script))",
    "identifiers": "q = sql.SQL(text).format(schema=sql.Identifier(name))",
    "message": 'raise ValueError(f"cannot select {what} from the list")',
}


@pytest.mark.parametrize("snippet", GOOD.values(), ids=GOOD.keys())
def test_the_scan_lets_statements_and_plain_text_be(snippet: str) -> None:
    assert problems_in(snippet) == []
