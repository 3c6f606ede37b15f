"""Sphinx directives generated from the code: `rand-ensemble-cli` (one command's reference,
from its parser), `rand-ensemble-data-kinds` (the `--data` kinds and their options) and
`rand-ensemble-schema` (a Parquet schema of the Beam jobs).

    ```{rand-ensemble-cli} questions
    ```

renders `rand-ensemble questions` into the page and every subcommand below it (`questions
train`, ...) as a section: the usage line, the description, and a table of every argument (flags, help with its
defaults expanded, choices) taken from `rand_ensemble.cli.main.build_parser()`, so the page
cannot drift from the parser. Each section is a link target named `cli-` + the command path
joined by dashes (`cli-questions-train`), which `tests/test_docs.py` checks for every command.
Help text is set as plain text, never parsed as markup, so no flag's help can break the build.
"""
import argparse

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def subcommands(parser):
    """(name, help, parser) of a parser's subcommands, in registration order; [] for a leaf."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return [(name, helps.get(name), sub) for name, sub in action.choices.items()]
    return []


def find(parser, path):
    """The parser of a command path such as ["questions", "train"]; KeyError if there is none."""
    for name in path:
        parser = dict((n, p) for n, _, p in subcommands(parser))[name]
    return parser


def label(path):
    """The link target of a command path: ["questions", "train"] -> "cli-questions-train"."""
    return "-".join(["cli"] + list(path))


def argument_rows(parser):
    """(flags, metavar, help) of every argument but -h and the subcommand selector."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        flags = ", ".join(action.option_strings) or action.dest
        metavar = formatter._format_args(action, action.dest.upper()) if action.nargs != 0 else ""
        text = formatter._expand_help(action) if action.help else ""
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            text += f" (choices: {', '.join(map(str, action.choices))})"
        rows.append((flags, metavar, text))
    return rows


def table(rows, header):
    """A docutils table of plain-text cells."""
    group = nodes.tgroup(cols=len(header))
    for width in (25, 15, 60)[:len(header)]:
        group += nodes.colspec(colwidth=width)
    head, body = nodes.thead(), nodes.tbody()
    for target, cells in ((head, [header]), (body, rows)):
        for cells_of_row in cells:
            row = nodes.row()
            for i, cell in enumerate(cells_of_row):
                entry = nodes.entry()
                entry += nodes.paragraph(text=cell) if i else nodes.paragraph(
                    "", "", nodes.literal(text=cell))
                row += entry
            target += row
    group += head
    group += body
    return nodes.table("", group)


class CliDirective(SphinxDirective):
    """Render one command (and its subcommands) of `rand-ensemble` from the parser."""
    required_arguments = 0            # none: the top-level usage and the list of commands
    optional_arguments = 4            # a path: `questions train`

    def run(self):
        from rand_ensemble.cli.main import PROG, build_parser

        path = list(self.arguments)
        try:
            parser = find(build_parser(), path)
        except KeyError:
            raise self.error(f"no command `{PROG} {' '.join(path)}` in build_parser()") from None
        return self.body(PROG, path, parser, top=True, recurse=bool(path))

    def body(self, prog, path, parser, top=False, recurse=True):
        """Usage, description, argument table and subcommand sections of one command; the top
        command's body goes straight into the page (whose title names it), its subcommands'
        into sections of their own."""
        name = label(path)
        title = f"{prog} {' '.join(path)}"
        self.env.get_domain("std").note_hyperlink_target(name, self.env.docname, name, title)
        out = [nodes.target("", "", ids=[name], names=[name])] if top else []
        out.append(nodes.literal_block(text=parser.format_usage().strip(), language="text"))
        if parser.description:
            out.append(nodes.literal_block(text=parser.description.strip(), language="text"))
        rows = argument_rows(parser)
        if rows:
            out.append(table(rows, ("argument", "value", "help")))
        children = subcommands(parser)
        if children:
            out.append(table([(n, "", h or "") for n, h, _ in children],
                             ("subcommand", "", "help")))
        if parser.epilog:
            out.append(nodes.literal_block(text=parser.epilog.strip(), language="text"))
        for child, child_help, sub in children if recurse else ():
            child_path = path + [child]
            section = nodes.section(ids=[label(child_path)], names=[label(child_path)])
            section += nodes.title(text=f"{prog} {' '.join(child_path)}")
            if child_help:
                section += nodes.paragraph(text=child_help)
            section.extend(self.body(prog, child_path, sub))
            out.append(section)
        return out


class DataKindsDirective(SphinxDirective):
    """The `--data SPEC` kinds and their options, from `rand_ensemble.data.spec.OPTIONS`."""

    def run(self):
        from rand_ensemble.data import spec

        rows = []
        for kind, options in spec.OPTIONS.items():
            merged = {**options, **spec.COMMON_OPTIONS}
            rows.append((kind, ", ".join(merged), "; ".join(f"{k}: {v}" for k, v in merged.items())))
        return [table(rows, ("kind", "options", "meaning"))]


class SchemaDirective(SphinxDirective):
    """A Parquet schema of the Beam jobs (`pipelines.schema.RENDERS` / `PAIRS`) as a table of
    column, Arrow type and the comment beside the column in schema.py."""
    required_arguments = 1

    def run(self):
        import inspect
        import re

        from rand_ensemble.pipelines import schema

        comments = dict(re.findall(r'\("(\w+)",.*?#\s*(.*)', inspect.getsource(schema)))
        fields = getattr(schema, self.arguments[0])
        rows = [(f.name, str(f.type), comments.get(f.name, "")) for f in fields]
        return [table(rows, ("column", "type", "note"))]


def setup(app):
    app.add_directive("rand-ensemble-schema", SchemaDirective)
    app.add_directive("rand-ensemble-cli", CliDirective)
    app.add_directive("rand-ensemble-data-kinds", DataKindsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
