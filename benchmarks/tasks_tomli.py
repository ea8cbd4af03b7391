"""The suite's tasks on tomli 2.5.0 (benchmarks/repos/tomli, a src layout without tests): questions with one right
answer, find-then-read questions, and edits (fixes of planted bugs, small additions) checked by hidden tests that also
parse a sample document and compare it with what the snapshot's parser returned."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Callable

from benchmarks.task_checks import DefinedIn, Number, Read, Text, file_line, python_number, python_value
from benchmarks.task_set import REPOS, Plant, edit, multi_step, question, read_number

TOMLI = REPOS / "tomli"
PARSER = "src/tomli/_parser.py"
RE = "src/tomli/_re.py"

SAMPLE = r'''# A sample configuration
title = "TOML \"sample\"\tv1"
version = 2
ratio = 0.25
big = 1_000_000
mask = 0xDEAD_beef
flags = [true, false]

[owner]
name = "Tom"
dob = 1979-05-27T07:32:00-08:00
lunch = 12:30:00.25

[database]
ports = [8000, 8001, 8002]
limits = { cpu = 1.5, mem = "2G" }
data = [["delta", "phi"], [3.14]]

[[products]]
name = "Hammer"
sku = 738594937

[[products]]
name = """
Nail\
  s"""
path = 'C:\Users\tom'
'''
# What the snapshot's own `tomli.loads(SAMPLE)` returned when these tasks were written (run, not typed in; the
# tests check it against the snapshot again).
SAMPLE_VALUE = {
    "title": 'TOML "sample"\tv1', "version": 2, "ratio": 0.25, "big": 1000000, "mask": 3735928559,
    "flags": [True, False],
    "owner": {"name": "Tom",
              "dob": datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.timezone(datetime.timedelta(
                  days=-1, seconds=57600))),
              "lunch": datetime.time(12, 30, 0, 250000)},
    "database": {"ports": [8000, 8001, 8002], "limits": {"cpu": 1.5, "mem": "2G"}, "data": [["delta", "phi"], [3.14]]},
    "products": [{"name": "Hammer", "sku": 738594937}, {"name": "Nails", "path": "C:\\Users\\tom"}],
}


def hidden_test(body: str) -> str:
    """An edit's hidden test: `body` after a check that the sample document still parses as the snapshot parsed it."""
    return (f"import datetime\nimport decimal\n\nimport pytest\n\nimport tomli\n\n"
            f"SAMPLE = {SAMPLE!r}\nEXPECTED = {SAMPLE_VALUE!r}\n\n\n"
            f"def test_the_sample_document_parses_as_before():\n    assert tomli.loads(SAMPLE) == EXPECTED\n\n\n"
            f"{body.strip()}\n")


def raised_by(call: str) -> Callable[[Path], str]:
    """The name of the exception `call` (an expression on the imported tomli) raises in the repo."""
    return python_value(f"import sys, tomli\ntry:\n    {call}\nexcept Exception as error:\n"
                        f"    raised = type(error).__name__\nraised")


# The escapes of a backslash and one printable character a one-line basic string accepts (\x, \u and \U need hex
# digits after them, so a lone one is refused).
ESCAPES_ACCEPTED = python_number(r"""import tomli
def accepted(char):
    try:
        tomli.loads('a = "\\' + char + '"')
    except tomli.TOMLDecodeError:
        return False
    return True
sum(accepted(chr(i)) for i in range(32, 127))""")

TASKS = [
    question("tomli-where-match-to-datetime", "In which file is the function `match_to_datetime` defined? Answer "
             "with its path.", DefinedIn("match_to_datetime"), repo=TOMLI),
    question("tomli-parse-float-default", "What does the parameter `parse_float` of `loads` default to? Answer with "
             "its name.", Text(python_value("import inspect, tomli\n"
                                            "parameters = inspect.signature(tomli.loads).parameters\n"
                                            'parameters["parse_float"].default.__name__')), repo=TOMLI),
    question("tomli-invalid-error", "Which exception does `loads` raise on invalid TOML? Answer with its name.",
             Text(raised_by('tomli.loads("a = ")')), repo=TOMLI),
    question("tomli-escape-count", r"Not counting the hex escapes (`\x`, `\u` and `\U`), how many escape sequences "
             "does tomli accept in a basic string? Answer with the number.", Number(ESCAPES_ACCEPTED), repo=TOMLI),
    multi_step("tomli-nesting-limit", "Find where tomli limits how deeply inline arrays and tables may be nested, "
               "and say what the limit is.", read_number(PARSER, r"^MAX_INLINE_NESTING: Final = (\d+)"), repo=TOMLI),
    multi_step("tomli-fraction-digits", "Find the regular expression tomli uses to match a time of day, and say how "
               "many digits of a fraction of a second it keeps at most.",
               read_number(RE, r"\(\[0-9\]\{1,(\d+)\}\)"), repo=TOMLI),
    multi_step("tomli-key-parts-error", "Find how tomli limits the number of parts of a dotted key, and say which "
               "exception it raises for a key with too many parts. Answer with its name.",
               Read(Text(raised_by('tomli.loads(".".join(["a"] * (sys.getrecursionlimit() + 1)) + " = 1")')),
                    file_line(PARSER, r'raise RecursionError\(\n\s+f"TOML key')), repo=TOMLI),
    edit("tomli-fix-fraction-micros", "Fix a bug in tomli: `tomli.loads('t = 1979-05-27T00:32:00.5Z')` gives a "
         "datetime 5 microseconds past the second instead of half a second past it.",
         hidden_test(r"""
def test_fractions_of_a_second():
    doc = tomli.loads("a = 1979-05-27T00:32:00.5Z\nb = 1979-05-27T00:32:00.999999-07:00\n"
                      "c = 1979-05-27T00:32:00.123\nd = 00:32:00.5\ne = 1979-05-27 00:32:00.1234567")
    assert [doc[key].microsecond for key in "abcde"] == [500000, 999999, 123000, 500000, 123456]
"""), repo=TOMLI, plant=Plant(RE, '    micros = int(micros_str.ljust(6, "0")) if micros_str else 0\n    if offset',
                              '    micros = int(micros_str.rjust(6, "0")) if micros_str else 0\n    if offset')),
    edit("tomli-fix-cr-escape", r'Fix a bug in tomli: the escape `\r` in a TOML string, as in `a = "one\rtwo"`, '
         "is decoded as a line feed, not as a carriage return.",
         hidden_test(r'''
def test_escapes():
    assert tomli.loads(r'a = "one\rtwo"')["a"] == "one\rtwo"
    assert tomli.loads(r'a = "\b\t\n\f\r\e\"\\"')["a"] == "\b\t\n\f\r\x1b\"\\"
    assert tomli.loads('a = """x\\ry\\nz"""')["a"] == "x\ry\nz"
'''), repo=TOMLI, plant=Plant(PARSER, r'"\\r": "\u000d",', r'"\\r": "\u000a",')),
    edit("tomli-fix-error-column", r'Fix a bug in tomli: `tomli.loads("a = 1\nb = ?")` raises a `TOMLDecodeError` '
         "whose `colno` is 6 and whose message says column 6, but the `?` is in column 5. Errors on the first line "
         "get the right column.",
         hidden_test(r"""
def test_columns_count_from_one_on_every_line():
    for doc, line, column in [("x = ?", 1, 5), ("a = 1\nb = ?", 2, 5), ('a = 1\n\n[t]\nkey = "v" junk', 4, 11)]:
        with pytest.raises(tomli.TOMLDecodeError) as info:
            tomli.loads(doc)
        assert (info.value.lineno, info.value.colno) == (line, column)
        assert f"line {line}, column {column}" in str(info.value)
"""), repo=TOMLI, plant=Plant(PARSER, r'colno = pos - doc.rindex("\n", 0, pos)',
                              r'colno = pos - doc.rindex("\n", 0, pos) + 1')),
    edit("tomli-fix-private-use-escape", r'Fix a bug in tomli: the string `"\uE000"` (U+E000, a private-use '
         'character) is refused with "Escaped character is not a Unicode scalar value", but TOML allows it.',
         hidden_test(r"""
def test_unicode_escapes():
    assert tomli.loads(r'a = "\uE000"')["a"] == "\ue000"
    assert tomli.loads(r'a = "\u0000\uD7FF\U0010FFFF"')["a"] == "\x00\ud7ff\U0010ffff"
    for bad in (r'a = "\uD800"', r'a = "\uDFFF"', r'a = "\U00110000"'):
        with pytest.raises(tomli.TOMLDecodeError):
            tomli.loads(bad)
"""), repo=TOMLI, plant=Plant(PARSER, "(57344 <= codepoint <= 1114111)", "(57344 < codepoint <= 1114111)")),
    edit("tomli-add-is-valid", "Add a public function `is_valid(s)` to the `tomli` package, listed in `__all__` "
         "beside `loads`: it returns True when the string `s` is a valid TOML document and False when it is not.",
         hidden_test(r"""
def test_is_valid():
    assert "is_valid" in tomli.__all__
    assert tomli.is_valid(SAMPLE) is True
    assert tomli.is_valid("") is True
    for bad in ("a = ", "a = 1\na = 2", "[t]\n[t]", r'a = "\q"'):
        assert tomli.is_valid(bad) is False
"""), repo=TOMLI),
    edit("tomli-add-error-coords", "Add a read-only property `coords` to `TOMLDecodeError`: the `(lineno, colno)` "
         "tuple of where parsing failed.",
         hidden_test(r"""
def test_coords():
    for doc, coords in [("x = ?", (1, 5)), ("a = 1\nb = ?", (2, 5))]:
        with pytest.raises(tomli.TOMLDecodeError) as info:
            tomli.loads(doc)
        assert info.value.coords == coords
        with pytest.raises(AttributeError):
            info.value.coords = (0, 0)
"""), repo=TOMLI),
    edit("tomli-add-load-path", "Add a public function `load_path(path, *, parse_float=float)` to the `tomli` "
         "package, listed in `__all__`: it parses the TOML file at `path` (a `str` or a `pathlib.Path`) and returns "
         "what `load` returns for that file opened in binary mode.",
         hidden_test(r"""
def test_load_path(tmp_path):
    assert "load_path" in tomli.__all__
    path = tmp_path / "sample.toml"
    path.write_bytes(SAMPLE.encode())
    assert tomli.load_path(path) == EXPECTED
    assert tomli.load_path(str(path)) == EXPECTED
    assert tomli.load_path(path, parse_float=decimal.Decimal)["ratio"] == decimal.Decimal("0.25")
"""), repo=TOMLI),
]
