"""The suite's tasks on examples/repo (textstats): questions with one right answer, find-then-read questions and
edits checked by hidden tests beside the repo's own; and the long tasks that read many files (`--suite long`)."""

from __future__ import annotations

from benchmarks.task_checks import (AllOf, DefinedIn, Number, Read, Text, count_asserts, count_test_functions,
                                    file_line, file_number, modules_importing, python_number, python_value,
                                    ranking_helper, ranking_line, top_level_functions)
from benchmarks.task_set import edit, long, multi_step, question, read_number

TASKS = [
    question("where-split-sentences", "In which file is the function `split_sentences` defined? Answer with its "
             "path.", DefinedIn("split_sentences")),
    question("where-text-stats", "In which file is the class `TextStats` defined? Answer with its path.",
             DefinedIn("TextStats")),
    question("where-syllables", "Which file defines the function `syllables`? Answer with its path.",
             DefinedIn("syllables")),
    question("syllables-of-banana", 'What does `syllables("banana")` return? Read the function, then answer with '
             "the number.", Number(python_number('from textstats.readability import syllables\n'
                                                  'syllables("banana")'))),
    question("top-default", "How many frequent words does the command line show when `--top` is not given? Answer "
             "with the number.", Number(file_number("textstats/cli.py", r'"--top", type=int, default=(\d+)'))),
    question("count-tests", "How many test functions are there in the files under tests/? Answer with the number.",
             Number(count_test_functions)),
    question("count-fields", "How many fields does the `TextStats` dataclass have? Answer with the number.",
             Number(python_number("import dataclasses\nfrom textstats.stats import TextStats\n"
                                  "len(dataclasses.fields(TextStats))"))),
    multi_step("vowel-pattern", "Find the module that counts syllables and give the regular expression it uses to "
               "find groups of vowels.", Read(Text(python_value("from textstats.readability import VOWEL_GROUP\n"
                                                                "VOWEL_GROUP.pattern")),
                                              file_line("textstats/readability.py", r"^VOWEL_GROUP = "))),
    multi_step("rank-helper", "The command line gets its numbers from a function in another module. Which helper "
               "function does that function call to rank the most frequent words? Answer with its name.",
               Read(Text(ranking_helper), ranking_line)),
    multi_step("rounding-places", "Find where the average word length is computed and say to how many decimal "
               "places it is rounded.", read_number("textstats/stats.py", r"round\(average, (\d+)\)")),
    multi_step("cli-test-words", "One test of the command line writes a small sample text to a file and checks the "
               "JSON it prints. How many words does that test expect the sample to have?",
               read_number("tests/test_cli.py", r'data\["words"\] == (\d+)')),
    edit("fix-syllables-case", 'Fix a bug in the function `syllables`: case should not matter, but a capitalised '
         'word such as "Open" gets fewer syllables than "open". Keep the tests passing.',
         "from textstats.readability import syllables\n\n\n"
         "def test_case_does_not_matter():\n"
         '    for word in ("Idea", "Umbrella", "ORANGE", "Cake"):\n'
         "        assert syllables(word) == syllables(word.lower())\n"
         '    assert syllables("Idea") == 2\n'),
    edit("fix-words-per-sentence", "Fix a bug in the function `words_per_sentence`: it returns a whole number even "
         'when the mean is not one, e.g. 2.0 instead of 2.5 for "One two three. Four five.". Keep the tests passing.',
         "from textstats.readability import words_per_sentence\n\n\n"
         "def test_fractional_mean():\n"
         '    assert words_per_sentence("I am. You are here. We go.") == 2.33\n'
         '    assert words_per_sentence("One two three. Four five.") == 2.5\n'
         '    assert words_per_sentence("Red fish. Blue fish.") == 2.0\n'),
    edit("add-longest-word", "Add a `longest_word` statistic: a new `TextStats` field holding the longest word of "
         "the text (the first one on a tie, an empty string for a text without words), computed in "
         "`compute_stats`. Keep the tests passing.",
         "from textstats.stats import compute_stats\n\n\n"
         "def test_longest_word():\n"
         '    assert compute_stats("A tiny elephant sat down").longest_word == "elephant"\n'
         '    assert compute_stats("cat dog").longest_word == "cat"\n'
         '    assert compute_stats("").longest_word == ""\n'),
    edit("add-syllables-per-word", "Add a function `syllables_per_word(text)` to the readability module: the mean "
         "number of syllables of the text's words, rounded to 2 places, 0.0 for a text without words. Keep the "
         "tests passing.",
         "from textstats.readability import syllables_per_word\n\n\n"
         "def test_syllables_per_word():\n"
         '    assert syllables_per_word("cat banana sea") == 1.67\n'
         '    assert syllables_per_word("") == 0.0\n'),
]


LONG_TASKS = [
    long("long-all-functions", "Read every Python file in the textstats folder, one file per tool call, then list "
         "the names of all the functions defined at the top level of those files.", AllOf(top_level_functions)),
    long("long-assert-count", "Read each test file under tests/, one file per tool call, and count the assert "
         "statements in all of them together. Answer with the number.", Number(count_asserts)),
    long("long-re-imports", "Read every module in the textstats folder, one file per tool call, and say which of "
         "them import the `re` module. Answer with their file names.", AllOf(modules_importing("re"))),
]
