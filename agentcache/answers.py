"""What is not a final answer: a plan ("I will search...", "you can use..."), a reply that names a tool, or one that
copies a tool's error message, written where the answer should be. The agent sends such a reply back with the retry
hint, as it does an invalid call."""
from __future__ import annotations

import re
from collections.abc import Iterable

# Intent, not result: the writer (or the reader) is to do something still. "I have added" is a result and passes.
PLAN = re.compile(r"""
    \b(?:I|we)(?:['’]ll|\s+(?:will|would|need\s+to|must|should|am\s+going\s+to|are\s+going\s+to|can\s+now))\b
    | \byou\s+(?:can|could|should|would|will|need\s+to|may|might|have\s+to)(?:\s+need\s+to)?\s+
          (?:use|search|run|call|look|find|check|read|open|try|grep|execute|add|write|modify|change|create|edit)\b
    | \blet(?:['’]s|\s+(?:me|us))\b
    | \bto\s+(?:find|locate|answer|determine|verify|check)\b[^.\n]*,\s+(?:I|we|you)
          (?:['’](?:ll|d)|\s+(?:will|would|need|must|should|can|could|may|might|have\s+to|am|are))\b""",
                  re.IGNORECASE | re.VERBOSE)  # "To find it, I searched ..." reports what was done: not a plan

ECHO_MIN = 20  # shorter text may be a name an error quotes ("no such file: notes.txt"), which can be the answer


def named_tool(text: str, tools: Iterable[str]) -> str | None:
    """The first of `tools` the text names as a tool: a name with an underscore standing whole, or any name in
    backticks, called (`search(`) or followed by "function" or "tool"."""
    for name in sorted(tools):
        as_tool = rf"`{re.escape(name)}`|\b{re.escape(name)}\s*\(|\b{re.escape(name)}\s+(?:function|tool)\b"
        whole = rf"(?<![\w.]){re.escape(name)}(?![\w(])" if "_" in name else None
        if re.search(as_tool, text, re.IGNORECASE) or (whole and re.search(whole, text)):
            return name
    return None


def not_an_answer(text: str, tools: Iterable[str], enabled: Iterable[str], asked: str = "",
                  answer: str = "the answer itself", errors: Iterable[str] = ()) -> str | None:
    """Why `text` is not a final answer, to send back to the model; None when it may stand as one. A tool name the
    task itself uses (`asked`: a question about a function called `search`) is the subject, not a tool named.
    `answer`: how the reason asks for the answer. `errors`: the error messages the tools returned this run."""
    if copies_error(text, errors):
        return f"that reply copies a tool's error message, which is not an answer: reply with {answer}"
    if plan := PLAN.search(text):
        return (f"that reply is a plan ({plan.group(0)!r}), not an answer: if you still need to look, call the tool "
                f"now; otherwise reply with {answer}")
    enabled = set(enabled)
    if (tool := named_tool(text, [t for t in tools if named_tool(asked, [t]) is None])) is not None:
        if tool not in enabled:
            return (f"that reply names the tool {tool}, which is not enabled here (enabled: "
                    f"{', '.join(sorted(enabled)) or 'none'}); reply with {answer}")
        return f"that reply names the tool {tool} instead of calling it: call it, or reply with {answer}"
    return None


def copies_error(text: str, errors: Iterable[str]) -> bool:
    """Whether `text` is a piece of one of `errors` (at least ECHO_MIN characters of it, whitespace aside): a small
    model stuck in a loop answers with the message that told it so."""
    said = " ".join(text.split())
    return len(said) >= ECHO_MIN and any(said in " ".join(error.split()) for error in errors)


# What an answer states that the repository could show: a number that is not a line number, a name in backticks, a
# dotted or path-like name (module.attr, pkg/mod.py), a snake_case or CamelCase name. Plain words are not checked.
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w|\.\d)")
LINE_NUMBER = re.compile(r"(?:\blines?\s+|\w:)\Z", re.IGNORECASE)  # "line 15", "words.py:15"
CODE_NAME = re.compile(r"`([^`\n]{1,80})`|(?<![\w.`/])([A-Za-z_]\w*(?:[./]\w+)+|[A-Za-z]*_\w+|"
                       r"(?=\w*[a-z])(?=[A-Z]\w*[A-Z])[A-Z]\w*)(?![\w`])")
GUTTER = re.compile(r"^[ \t]*\d+(?:\t|[:-] | )", re.MULTILINE)  # read_file's, search's and the outline's numbers


def stated_facts(answer: str) -> list[str]:
    """The numbers (not line numbers) and code names `answer` states, in order, each once."""
    facts = [m.group(0) for m in NUMBER.finditer(answer) if not LINE_NUMBER.search(answer[:m.start()])]
    facts += [m.group(1) or m.group(2) for m in CODE_NAME.finditer(answer)]
    return list(dict.fromkeys(f.strip() for f in facts if f.strip()))


def unseen_facts(answer: str, evidence: Iterable[str]) -> list[str]:
    """What `answer` states that none of `evidence` (the task, the project context, the tools' outputs) holds: a
    number must stand whole outside the line-number gutters, a name anywhere. An answer stating something the
    model never saw is a guess from memory ("SHA-256" where the file says sha1)."""
    seen = GUTTER.sub("", "\n".join(evidence))
    unseen = []
    for fact in stated_facts(answer):
        if NUMBER.fullmatch(fact):
            found = re.search(rf"(?<![\w.]){re.escape(fact)}(?![\w]|\.\d)", seen)
        else:
            found = fact in seen
        if not found:
            unseen.append(fact)
    return unseen
