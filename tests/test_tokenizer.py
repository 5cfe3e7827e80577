"""The shipped byte-level BPE tokenizer: lossless round trip and named special tokens."""
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tokenizer import MASK, SPECIAL_TOKENS, CodeTokenizer
from tests.conftest import SHIPPED

TOK = CodeTokenizer.load(SHIPPED)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_text(text):
    assert TOK.decode(TOK.encode(text)) == text


def test_round_trip_code_with_special_token_names():
    code = 'mask = "<|mask|>"\n\tif x:\r\n        return "é—中文 🙂" + f"{EOM}"\n'
    ids = TOK.encode(code)
    assert TOK.mask_id not in ids and TOK.eom_id not in ids
    assert TOK.decode(ids) == code


def test_special_tokens_take_the_first_ids():
    assert [TOK.tok.token_to_id(s) for s in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert TOK.mask_id == TOK.tok.token_to_id(MASK) and TOK.vocab_size == 8192
