"""Evaluating a network: the .bin verification sets a tool scores and their log lines
(verification_sets), the wrong pairs behind an accuracy (pair_errors) and ROC plots
(roc_plot); IJB-B/IJB-C 1:1 verification (reading insightface's release, alignment,
template pooling, TAR@FAR: the ijb_* modules; at training time: ijb_validation). May
import data/, verification, nets/, losses/, devices/."""
