import pytest

from rlhf.prompts import Prompt, PromptFileError, load_prompts


def test_shipped_sets_load_by_name():
    drawbench = load_prompts("drawbench")
    assert len(drawbench) == 200 and drawbench[0] == Prompt("A red colored car.", "Colors")
    assert len(load_prompts("toy_train")) == 16 and len(load_prompts("toy_eval")) == 200


def test_text_file_skips_blank_lines_and_comments(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# mine\na red circle\n\n  a blue square  \n")
    assert load_prompts(f) == [Prompt("a red circle"), Prompt("a blue square")]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("p.csv", "text,category\na cat,animals\n,animals\n", r"p.csv:3: empty prompt"),
        ("p.csv", "words,category\na cat,animals\n", r"p.csv:1: no prompt column"),
        ("p.csv", "prompt,category\na cat, with a hat,animals\n", r"p.csv:2: 3 fields where the header has 2"),
        ("p.txt", "# nothing\n\n", r"p.txt: no prompts in the file"),
        ("p.json", "[]", r"unknown prompt file type '.json'"),
    ],
)
def test_bad_file_gets_one_line_error_naming_the_line(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(PromptFileError, match=message) as e:
        load_prompts(f)
    assert "\n" not in str(e.value)


def test_non_utf8_file_names_the_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("ok\nfine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match=r"p.txt:3: not UTF-8"):
        load_prompts(f)


def test_missing_file_lists_the_known_sets(tmp_path):
    with pytest.raises(PromptFileError, match="no such prompt file; known sets: drawbench, toy_eval, toy_train"):
        load_prompts(tmp_path / "nope.txt")
