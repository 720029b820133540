"""Every command the documentation shows exists, with flags its tool accepts.

Reads each shell block (```bash, ```sh, ```shell, ```console) of README.md and
docs/*.md, and checks each command in it:
  * `python3 <tool>.py ...` (or `python`, `.venv/bin/python`, `-m package.tool`):
    the tool exists and its own parser (`get_parser()`, argparse) accepts the
    command line, each flag spelt exactly (argparse would take an abbreviation,
    which hides a rename);
  * `make <target>`: the Makefile has the target;
  * `bash test/<script>.sh ...`: the script exists; its own flags are the ones
    test/train_common.sh parses, and the rest go to train_nets.py's parser.
Nothing is run: a renamed flag fails here instead of in a user's terminal.
"""
import contextlib
import glob
import importlib
import importlib.util
import io
import os
import re
import shlex

import pytest

from conftest import PROJECT_ROOT

SHELL_FENCES = ('bash', 'sh', 'shell', 'console')
PYTHONS = ('python', 'python3', 'python3.7', '.venv/bin/python', '.venv-tf1/bin/python')
SEPARATORS = ('&&', '||', ';', '|', '&', '(', ')')
ELLIPSIS = '...'  # 'and the other flags' in a command the pages show


def documentation_files():
    return [os.path.join(PROJECT_ROOT, 'README.md')] + sorted(
        glob.glob(os.path.join(PROJECT_ROOT, 'docs', '*.md')))


def shell_blocks(text):
    """[(first line number, block text)] of the fenced shell blocks of a Markdown text."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r'^\s*```+\s*(\S*)', line)
        if fence and current is None:
            if fence.group(1) in SHELL_FENCES:
                current, start = [], number + 1
            else:
                current, start = False, 0  # another language: skipped to its end
        elif fence:
            if current:
                blocks.append((start, '\n'.join(current)))
            current = None
        elif current is not None and current is not False:
            current.append(line[2:] if line.startswith('$ ') else line)
    return blocks


def commands(block):
    """Each simple command of a shell block as a list of words (comments dropped)."""
    joined = re.sub(r'\\\n', ' ', block)
    lines, pending = [], ''
    for line in joined.splitlines():  # a quoted string may span lines
        pending = pending + '\n' + line if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:
            continue
        lines.append(pending)
        pending = ''
    found = []
    for line in lines + ([pending] if pending else []):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=';&|()')
        lexer.whitespace_split = True
        lexer.commenters = '#'
        words = []
        for word in list(lexer) + [';']:
            if word in SEPARATORS or set(word) <= set(';&|()'):
                if words:
                    found.append(words)
                words = []
            else:
                words.append(word)
    return found


def documented_commands():
    """(place, words) of every command the documentation shows."""
    found = []
    for path in documentation_files():
        with open(path) as page:
            text = page.read()
        for start, block in shell_blocks(text):
            for words in commands(block):
                while words and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', words[0]):
                    words = words[1:]  # VAR=value before the command
                words = [w for w in words if w != ELLIPSIS]
                if words:
                    found.append(('%s:%d' % (os.path.relpath(path, PROJECT_ROOT), start), words))
    return found


def tool_module(words):
    """(module name, path, arguments) of a `python3 <tool>.py ...` command, or None."""
    if words[0] not in PYTHONS or len(words) < 2 or words[1] == '-c':
        return None
    if words[1] == '-m':
        name = words[2]
        if not os.path.exists(os.path.join(PROJECT_ROOT, name.split('.')[0])):
            return None  # not the project's (pip, venv)
        return name, os.path.join(*name.split('.')) + '.py', words[3:]
    path = os.path.normpath(words[1])
    return path[:-len('.py')].replace(os.sep, '.'), path, words[2:]


def parser_errors(parser, arguments):
    """What the parser says of `arguments` (None: accepted), without running the tool."""
    known = set(parser._option_string_actions)  # every spelling the tool defines
    for word in arguments:
        flag = word.split('=', 1)[0]
        if flag.startswith('--') and flag not in known:
            return '%s is not a flag of %s' % (flag, parser.prog)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(arguments)
    except SystemExit as exit_:
        return stderr.getvalue().strip() or 'exit %s' % exit_.code
    return None


def make_targets():
    with open(os.path.join(PROJECT_ROOT, 'Makefile')) as makefile:
        return set(re.findall(r'^([A-Za-z0-9_.-]+)\s*:(?!=)', makefile.read(), re.M))


def launch_script_flags():
    """The flags test/train_common.sh parses itself (the rest go to train_nets.py)."""
    with open(os.path.join(PROJECT_ROOT, 'test', 'train_common.sh')) as script:
        return set(re.findall(r'(--[a-z_]+)=\*', script.read()))


def _import_tool(name, path):
    """The tool's module: by name, or from its file for the benchmarks (test/benchmark/ is
    not a package)."""
    if not path.startswith(os.path.join('test', 'benchmark') + os.sep):
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, os.path.join(PROJECT_ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(words, parsers):
    """None if the command is fine, else why not. `parsers` caches get_parser() per module."""
    tool = tool_module(words)
    if tool is not None:
        name, path, arguments = tool
        if not os.path.isfile(os.path.join(PROJECT_ROOT, path)):
            return 'no such tool: %s' % path
        if name not in parsers:
            module = _import_tool(name, path)
            if not hasattr(module, 'get_parser'):
                return '%s has no get_parser() to check its flags with' % path
            parsers[name] = module.get_parser
        return parser_errors(parsers[name](), arguments)
    if words[0] == 'make':
        missing = [w for w in words[1:] if not w.startswith('-') and '=' not in w
                   and w not in make_targets()]
        return 'no make target %s' % ', '.join(missing) if missing else None
    if words[0] == 'bash' and len(words) > 1 and words[1].startswith('test/'):
        if not os.path.isfile(os.path.join(PROJECT_ROOT, words[1])):
            return 'no such script: %s' % words[1]
        own = launch_script_flags()
        rest = [w for w in words[2:] if w.split('=', 1)[0] not in own]
        if 'train_nets' not in parsers:
            parsers['train_nets'] = importlib.import_module('train_nets').get_parser
        # train_nets.py gets the script's flags too (--tfrecords_file_path from --data_path).
        return parser_errors(parsers['train_nets'](), rest + ['--tfrecords_file_path', 'x']
                             if any(w.startswith('--') for w in rest) else [])
    return None


def is_checked(words):
    return (tool_module(words) is not None or words[0] == 'make'
            or (words[0] == 'bash' and len(words) > 1 and words[1].startswith('test/')))


COMMANDS = documented_commands()


def test_the_documentation_shows_commands_of_every_kind():
    """The reader below finds the commands (a broken reader would check nothing)."""
    checked = [words for _, words in COMMANDS if is_checked(words)]
    assert len(checked) >= 40, checked
    assert any(w[0] == 'make' for w in checked)
    assert any(w[0] == 'bash' for w in checked)
    assert any(w[1] == 'train_nets.py' for w in checked if w[0] in PYTHONS)
    assert any(w[1].startswith('data/') for w in checked if w[0] in PYTHONS)


@pytest.mark.parametrize('place, words', [c for c in COMMANDS if is_checked(c[1])],
                         ids=lambda value: value if isinstance(value, str) else None)
def test_documented_command_exists_and_its_flags_parse(place, words, parser_cache):
    problem = check(words, parser_cache)
    assert problem is None, '%s: `%s`: %s' % (place, ' '.join(words), problem)


@pytest.fixture(scope='module')
def parser_cache():
    return {}


def test_a_renamed_flag_fails(parser_cache):
    """What a rename looks like to this test: the documented spelling is refused, also
    where argparse would have taken it as an abbreviation of the new name."""
    assert check(['python3', 'eval_ckpt_file.py', '--ckpt_file', 'c', '--eval_datasets', 'lfw'],
                 parser_cache) is None
    import eval_ckpt_file
    parser = eval_ckpt_file.get_parser()
    renamed = parser._option_string_actions.pop('--ckpt_file')
    renamed.option_strings = ['--ckpt_file_or_folder']
    parser._option_string_actions['--ckpt_file_or_folder'] = renamed
    problem = parser_errors(parser, ['--ckpt_file', 'c'])
    assert problem == '--ckpt_file is not a flag of eval_ckpt_file.py'
    assert 'no make target bench-everything' == check(['make', 'bench-everything'], parser_cache)
    assert check(['python3', 'data/mx2tfrecords.py', '--bin_path', 'a'], parser_cache)  # --idx_path
    assert check(['python3', 'no_such_tool.py'], parser_cache) == 'no such tool: no_such_tool.py'
    assert 'not a flag' in check(['bash', 'test/train_full_1p.sh', '--data_path=d',
                                  '--no_such_flag=1'], parser_cache)


def test_reader_splits_blocks_into_commands():
    text = ('intro\n```bash\n# a comment\nA=1 make demo && make test  # two\n'
            'python3 train_nets.py --batch_size 8 \\\n    --net_depth 18\n```\n'
            '```python\nimport os\n```\n```\nnot shell\n```\n')
    blocks = shell_blocks(text)
    assert [start for start, _ in blocks] == [3]
    assert commands(blocks[0][1]) == [
        ['A=1', 'make', 'demo'], ['make', 'test'],
        ['python3', 'train_nets.py', '--batch_size', '8', '--net_depth', '18']]
