"""Python's own parser, for every thread of the server: `ast.parse` (and compiling its tree) under one lock.

CPython before 3.11.8 and 3.12.1 keeps the AST converter's recursion depth in state that threads share, so two
threads parsing at once can fail with `SystemError: AST constructor recursion depth mismatch` (CPython
gh-106905); `eval edits` met it once in a session's repair, and the session went with it. The server parses from
several threads (requests are prepared in an executor, verified in the scheduler's thread, next edits on the event
loop); a parse takes milliseconds, so serializing them costs nothing a user sees."""
from __future__ import annotations

import ast
import threading

_lock = threading.Lock()


def parse(source: str, check: bool = False) -> ast.Module:
    """`ast.parse(source)`; with `check`, also compiled, so symbol-table errors (a duplicate parameter, `return`
    outside a function) raise SyntaxError as well."""
    with _lock:
        try:
            tree = ast.parse(source)
        except SystemError:   # the shared state left wrong by a parse outside this lock (a library's): once more
            tree = ast.parse(source)
        if check:
            compile(tree, "<edit>", "exec", dont_inherit=True)
    return tree
