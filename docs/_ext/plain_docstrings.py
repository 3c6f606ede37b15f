"""Render the package's plain-text docstrings as they read in an editor.

The docstrings are written to be read as text (STYLE.md): module docstrings lay out files and
grammars in indented, aligned columns, and prose names globs and patterns such as `run_*` or
pairs-*.parquet. Read as reStructuredText, those columns become broken block quotes and a lone
`*` starts emphasis that never ends. This hook, run after napoleon, keeps them as written:

- an indented block outside napoleon's sections becomes a literal block (its columns kept);
- a `*` or `|` that would open inline markup it never closes, and a word's trailing `_`
  (`run_*` would be a link to "run"), are escaped.

Real markup is left alone: ``**strong**``, ``*emphasis*``, bullets, backquoted code and
napoleon's field lists.
"""
import re

# Complete inline markup: code/literals in backquotes, **strong**, *emphasis*, |substitution|.
MARKUP = re.compile(r"``.+?``|`[^`]+`|(?<![\w*])\*\*[^\s*](?:.*?[^\s*])?\*\*(?![\w*])"
                    r"|(?<![\w*])\*[^\s*](?:[^*]*?[^\s*])?\*(?![\w*])")
# A `*` or `|` that could open markup (followed by a non-space), and a word's trailing `_`.
STRAY = re.compile(r"[*|](?=\S)|(?<=\w)_(?!\w)")
SECTION = re.compile(r"(Args|Arguments|Parameters|Keyword Args|Other Parameters|Returns?|Yields?"
                     r"|Raises|Attributes|Examples?|Notes?|Warnings?|See Also|Methods):\s*$")


def _escape(match):
    return "\\" + match.group(0)


def escape_stray(line):
    """Escape stray `*`, `|` and trailing `_` outside complete markup."""
    out, pos = [], 0
    for match in MARKUP.finditer(line):
        out.append(STRAY.sub(_escape, line[pos:match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(STRAY.sub(_escape, line[pos:]))
    return "".join(out)


def literal_blocks(lines):
    """Indented runs of a docstring -> literal blocks, blank lines around them; the bodies of
    napoleon's sections (Args:, Returns:, ...) and blocks after `::` stay as they are."""
    out, inside, previous = [], False, ""
    for line in lines:
        indented = line.startswith((" ", "\t")) and line.strip()
        if indented and not inside and (SECTION.match(previous.strip())
                                        or previous.rstrip().endswith("::")):
            inside = "kept"
        if line.strip():
            previous = line if not indented else previous
        if indented and not inside:
            if out and out[-1].strip():
                out.append("")
            out.extend(["::", ""])
            inside = True
        elif inside and line.strip() and not indented:
            out.append("")
            inside = False
        out.append(line)
    return out


def layout(app, what, name, obj, options, lines):
    """autodoc-process-docstring, before napoleon: indented layout -> literal blocks."""
    lines[:] = literal_blocks(lines)


def escape(app, what, name, obj, options, lines):
    """autodoc-process-docstring, after napoleon: escape stray markup characters."""
    inside_literal = False
    for i, line in enumerate(lines):
        if line.strip() == "::" or line.rstrip().endswith("::"):
            inside_literal = True
            continue
        if inside_literal and line.strip() and not line.startswith((" ", "\t")):
            inside_literal = False
        if not inside_literal:
            lines[i] = escape_stray(line)


def setup(app):
    app.connect("autodoc-process-docstring", layout, priority=400)    # before napoleon (500)
    app.connect("autodoc-process-docstring", escape, priority=600)    # after it
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
