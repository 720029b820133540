"""The tools print the project's lines only; --verbose brings TensorFlow's own back.

Run as a user would: TF_CPP_MIN_LOG_LEVEL unset (the test runner sets it for itself).
"""
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

# What TensorFlow itself prints: absl's pre-init line, C++ log lines (I/W/E + date, or the
# TF 1.15 form with a date first), and Python warnings through its logger.
TENSORFLOW_MARKS = ('absl::InitializeLog', 'cpu_feature_guard', 'WARNING:tensorflow',
                    'is deprecated', 'Instructions for updating', 'oneDNN')


def run_as_user(args):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run([sys.executable] + args, cwd=PROJECT_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def tensorflow_lines(text):
    return [line for line in text.splitlines() if any(m in line for m in TENSORFLOW_MARKS)]


@pytest.mark.parametrize('tool', ['train_nets.py', 'eval_ckpt_file.py'])
def test_a_refused_run_prints_one_line_and_verbose_brings_tensorflow_back(tool, tmp_path):
    # Refused after TensorFlow is imported and put in graph mode (which logs a deprecation
    # warning in both frameworks), before anything is built.
    missing = str(tmp_path / 'missing')
    args = {'train_nets.py': ['--tfrecords_file_path', missing, '--device', 'cpu'],
            'eval_ckpt_file.py': ['--ckpt_file', missing, '--eval_db_path', missing]}[tool]
    quiet = run_as_user([tool] + args)
    assert quiet.returncode == 2, quiet.stderr
    assert quiet.stdout == '' and len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    assert missing in quiet.stderr
    verbose = run_as_user([tool] + args + ['--verbose'])
    assert verbose.returncode == 2, verbose.stderr
    assert tensorflow_lines(verbose.stderr), verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == quiet.stderr.strip()


def test_a_user_setting_of_the_cpp_log_level_is_kept():
    code = ('import os, sys; sys.argv = ["tool"]; from data import quiet; '
            'print(os.environ["TF_CPP_MIN_LOG_LEVEL"])')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0')
    kept = subprocess.run([sys.executable, '-c', code], cwd=PROJECT_ROOT, env=env,
                          stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert kept.stdout.strip() == '0'
    unset = run_as_user(['-c', code])
    assert unset.stdout.strip() == '2'
