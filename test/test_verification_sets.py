"""Tests for evaluation/verification_sets.py: the report lines users' tools parse."""
import logging

import numpy as np

import verification
from evaluation import verification_sets


def test_log_lines_match_the_original_format(caplog):
    result = verification.VerificationResult(
        accuracy=0.995166666, accuracy_std=0.003585, val=0.9, val_std=0.01, far=0.001,
        threshold=1.4, fold_thresholds=np.full(10, 1.4), xnorm=21.8437183, nrof_pairs=6000,
        tpr=None, fpr=None)
    with caplog.at_level(logging.INFO, logger='report'):
        verification_sets.log_result('lfw', 2000, result, logging.getLogger('report'))
    assert [r.getMessage() for r in caplog.records] == [
        '[lfw][2000]XNorm: 21.843718', '[lfw][2000]Accuracy-Flip: 0.99517+-0.00359']
