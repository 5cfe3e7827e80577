"""Tree-sitter decisions: line or block at the cursor, the enclosing block, scope trimming, syntax validity."""
from runtime.syntax import enclosing_block, error_count, keep_valid, language_of, trim_to_scope, wants_block

SRC = 'import os\n\n\ndef read(path):\n    """Read — a file."""\n    \n\n\nprint(read("x"))\n'


def test_language_by_id_or_extension():
    assert language_of("file:///a/b.py") == "python" and language_of("file:///a/b.rs") is None
    assert language_of("file:///a/b", "python") == "python" and language_of("file:///a/b.py", "rust") is None


def test_block_in_an_empty_body_line_inside_brackets_and_mid_line():
    cut = SRC.index('    \n\n\nprint') + 4
    assert wants_block(SRC[:cut], SRC[cut:], "python")                     # the body after the docstring
    call = "x = foo(\n    "
    assert not wants_block(call, "\n)\n", "python")                      # an argument inside an open call
    assert not wants_block("x = 1 +", "\n", "python")                      # mid-expression
    assert wants_block("x = 1\n", "\ny = 2\n", None)                       # no grammar: a blank line is a block


def test_enclosing_block_is_the_function_as_whole_lines():
    offset = SRC.index("Read")
    start, end = enclosing_block(SRC, offset, "python")
    assert SRC[start:end].startswith("def read(path):") and SRC[start:end].endswith('file."""\n')
    s2, e2 = enclosing_block("a = 1\nb = 2\n\nc = 3\n", 2, None)                # paragraph without a grammar
    assert (s2, e2) == (0, 12)


def test_trim_to_scope_and_keep_valid():
    prefix = "def f(x):\n    "
    assert trim_to_scope("y = x + 1\n    return y\nprint(f(2))\n", prefix) == "y = x + 1\n    return y\n"
    assert error_count("python", "def f(:\n") > 0 == error_count("python", "def f():\n    pass\n")
    good = "return x\n"
    assert keep_valid(prefix, good, "\n", "python") == good
    assert keep_valid(prefix, "return x\n    if (:\n", "\n", "python") == "return x\n"   # the broken line goes
    assert keep_valid(prefix, "if (:\n", "\n", "python") == ""                           # nothing valid: nothing
    assert keep_valid("x = (", "1 +", ")\n", None) == "1 +"                             # no grammar: unchanged


def test_keep_valid_cuts_an_overfilled_line_between_tokens():
    """A window the model overfills writes past the line's end: the longest start of the line that parses is
    kept, cut between tokens (not inside a name), rather than nothing."""
    prefix, suffix = "class A:\n    sequence: Sequence[_T] | Map", "\n\n    def f(self):\n        pass\n"
    assert keep_valid(prefix, "ping[Any, _T], _T] | None = None", suffix, "python") == "ping[Any, _T]"
    assert keep_valid(prefix, "ping[Any, _T]", suffix, "python") == "ping[Any, _T]"        # valid: unchanged
    # a line replacing a whole line keeps its line break; nothing that parses between tokens: nothing
    assert keep_valid("def f(x):\n", "    return x) + 1\n", "    pass\n", "python") == "    return x\n"
    assert keep_valid("def f(x):\n    return ", "x)(", "\n", "python") == "x"
    assert keep_valid("def f(x):\n    return x\n", "y = (((", "\n", "python") == ""
    # a cut inside a name is never made (`retu` would parse, as a name), nor before a space (`y` of `y = (((`)
    assert keep_valid("def f(x):\n    ", "retur(", "\n", "python") == ""


def test_end_guard_refuses_a_line_that_breaks_python_where_the_middle_is_to_blame():
    from runtime.syntax import end_guard

    assert end_guard(None, "x = (", ")\n", True) is None and end_guard("rust", "x", "", False) is None
    prefix, suffix = "def f(xs):\n    total = 0\n", "    return total\n"   # HumanEval's shape: a whole line
    line = end_guard("python", prefix, suffix, single_line=True)
    assert line("    total += 1\n") and line("    total += 1")             # the line's break is its own
    assert not line("    total =\n") and not line("    if")
    assert not line("    for x in xs:\n")                                     # a header with no body after it
    broken_below = end_guard("python", prefix, suffix + "\n\ndef g(:\n", single_line=True)
    assert broken_below("    total += 1\n") and not broken_below("    total =\n")   # an error elsewhere is not ours
    broken_above = end_guard("python", "def g(:\n    pass\n" + prefix, suffix, single_line=True)
    assert broken_above("    total =\n")                                   # the parser stops before us: no judgement
    mid_line = end_guard("python", "x = foo(", ")\n", single_line=True)       # the rest of the line is the suffix's
    assert mid_line("1, 2") and not mid_line("1 +")
    block = end_guard("python", prefix, suffix, single_line=False)
    assert block("    for x in xs:\n        total += x\n") and not block("    for x in xs:\n        total = (x,\n")
    assert block("    total += 1\n   ")                                      # the healed indent before eom is undone
    big = end_guard("python", "def a():\n    pass\n" * 2000 + prefix, suffix, single_line=True)
    assert big("    total += 1\n") and not big("    total =\n")                 # a large file is cut at top-level lines
