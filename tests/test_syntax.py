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
