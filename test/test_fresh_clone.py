"""A clone with no ../shared beside it: the suite collects, real-data tests skip (and say
why), and CI=true or REQUIRE_SHARED_DATA=1 turn the same absence into a failure.

Runs pytest in a subprocess on a copy of the tracked files placed where ../shared
does not exist, on a few tests that need it, rather than the whole suite again.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT  # noqa: E402
# One test of each kind that needs ../shared: MXNet-written bytes, the original's
# variable lists, real faces.
NEEDS_SHARED = ['test/test_recordio.py::test_insightface_layout',
                'test/test_nets.py::test_variables_match_original_checkpoint[50-standard]',
                'test/test_eval_data_reader.py::test_orl_val']


def tracked_files():
    try:
        listing = subprocess.check_output(['git', 'ls-files', '-z'], cwd=PROJECT_ROOT)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout: cannot tell which files a clone has')
    return [name for name in listing.decode('utf-8').split('\0') if name]


@pytest.fixture(scope='module')
def bare_clone(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('elsewhere') / 'project')
    for name in tracked_files():
        source = os.path.join(PROJECT_ROOT, name)
        if os.path.isfile(source):  # listed but deleted in this working tree: not cloned
            target = os.path.join(root, name)
            if not os.path.isdir(os.path.dirname(target)):
                os.makedirs(os.path.dirname(target))
            shutil.copy2(source, target)
    assert not os.path.exists(os.path.join(os.path.dirname(root), 'shared'))
    return root


def run_pytest(clone, args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ('CI', 'REQUIRE_SHARED_DATA')}
    environ.update(env)
    return subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-q']
                          + args, cwd=clone, env=environ, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)


def test_the_whole_suite_collects_without_shared(bare_clone):
    result = run_pytest(bare_clone, ['--collect-only'])
    assert result.returncode == 0, result.stdout[-3000:]
    assert 'error' not in result.stdout.splitlines()[-1], result.stdout[-3000:]


def test_real_data_tests_skip_loudly_without_shared(bare_clone):
    result = run_pytest(bare_clone, NEEDS_SHARED)
    assert result.returncode == 0, result.stdout[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert 'passed' not in last and 'failed' not in last and 'skipped' in last, last
    assert '../shared/data not present: real-data tests skipped' in result.stdout


@pytest.mark.parametrize('env', [{'CI': 'true'}, {'REQUIRE_SHARED_DATA': '1'}])
def test_ci_fails_without_shared(bare_clone, env):
    result = run_pytest(bare_clone, NEEDS_SHARED[:1], **env)
    assert result.returncode == 1, result.stdout[-3000:]
    assert 'shared test data not found' in result.stdout
