"""The project's shape: imports only go down the layers, no sys.path edits, and the data
tools run both as files and as modules.

Layers, lowest first (README, "Layout"): data → verification (the protocol) and nets
(neither imports the other) → losses → devices → evaluation (IJB-B/C: the release, the
protocol, the embedding loop) → training → the entry-point scripts at the top. A module may
import its own package and the layers below it, never a layer above or another package of
its own layer.
"""
import ast
import os
import subprocess
import sys

from conftest import PROJECT_ROOT

RANKS = {'data': 0, 'verification': 1, 'nets': 1, 'losses': 2, 'devices': 3, 'evaluation': 4,
         'training': 5}
SCRIPTS = ('train_nets', 'train_nets_mgpu', 'eval_ckpt_file', 'export_model', 'extract_features',
           'eval_ijb')
SCRIPT_RANK = 6
DATA_TOOLS = ('mx2tfrecords', 'folder2tfrecords', 'make_pairs', 'lfw_pairs', 'prepare_faces',
              'make_synthetic_dataset')


def product_modules():
    """{unit: [path]} of every product module: the packages' files (their subpackages'
    included) and the top-level ones."""
    modules = {}
    for name in sorted(os.listdir(PROJECT_ROOT)):
        path = os.path.join(PROJECT_ROOT, name)
        if name.endswith('.py'):
            modules.setdefault(name[:-3], []).append(path)
        elif name in RANKS:
            modules[name] = [os.path.join(folder, f) for folder, _, files in sorted(os.walk(path))
                             for f in sorted(files) if f.endswith('.py')]
    return modules


def unit_of(imported):
    """The layer unit a dotted module name belongs to, or None outside the project."""
    top = imported.split('.')[0]
    if top in RANKS:
        return top
    if top in SCRIPTS:
        return 'scripts'
    return None


def rank(unit):
    return SCRIPT_RANK if unit == 'scripts' else RANKS[unit]


def imports_of(path):
    """[(line, dotted name)] of every import statement in the file, at any depth."""
    with open(path) as source:
        tree = ast.parse(source.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layering_violations(modules):
    problems = []
    for unit, paths in modules.items():
        mine = 'scripts' if unit in SCRIPTS else unit
        if mine not in RANKS and mine != 'scripts':
            problems.append('%s: a top-level module that is not an entry point or a layer'
                            % paths[0])
            continue
        for path in paths:
            for line, name in imports_of(path):
                other = unit_of(name)
                if other is None or other == mine:
                    continue
                if rank(other) >= rank(mine):
                    problems.append('%s:%d imports %s (%s, layer %d) from %s (layer %d)'
                                    % (os.path.relpath(path, PROJECT_ROOT), line, name, other,
                                       rank(other), mine, rank(mine)))
    return problems


def test_imports_only_go_down_the_layers():
    modules = product_modules()
    assert set(RANKS) - {'verification'} <= set(modules)
    assert 'eval_ijb' in modules
    assert layering_violations(modules) == []


def test_the_check_finds_an_upward_and_a_sideways_import(tmp_path):
    """The check itself: an import from a layer above, and one across a layer, are found."""
    upward = tmp_path / 'input_pipeline.py'
    upward.write_text('import os\nfrom training import trainer\n')
    sideways = tmp_path / 'verification.py'
    sideways.write_text('from nets import layers\n')
    problems = layering_violations({'data': [str(upward)], 'verification': [str(sideways)]})
    assert len(problems) == 2
    assert problems[0].endswith(':2 imports training (training, layer 5) from data (layer 0)')
    assert problems[1].endswith(':1 imports nets (nets, layer 1) from verification (layer 1)')


def test_no_module_edits_sys_path():
    edits = []
    for paths in product_modules().values():
        for path in paths:
            with open(path) as source:
                tree = ast.parse(source.read(), path)
            edits += ['%s:%d' % (os.path.relpath(path, PROJECT_ROOT), node.lineno)
                      for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr == 'path'
                      and isinstance(node.value, ast.Name) and node.value.id == 'sys']
    assert edits == []


def test_data_tools_run_as_files_from_anywhere_and_as_modules(tmp_path):
    """`python3 data/<tool>.py` from another folder and `python3 -m data.<tool>` from the
    project root, for every data tool (started together: two cores, a dozen processes)."""
    runs = {}
    for tool in DATA_TOOLS:
        runs[tool + '.py'] = subprocess.Popen(
            [sys.executable, os.path.join(PROJECT_ROOT, 'data', tool + '.py'), '--help'],
            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            universal_newlines=True)
        runs['-m data.' + tool] = subprocess.Popen(
            [sys.executable, '-m', 'data.' + tool, '--help'], cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    for form, run in runs.items():
        output = run.communicate(timeout=300)[0]
        assert run.returncode == 0 and 'usage:' in output, (form, output[-2000:])
