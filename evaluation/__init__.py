"""Evaluation protocols beyond the .bin sets: IJB-B/IJB-C 1:1 verification (reading
insightface's release, alignment, template pooling, TAR@FAR). May import data/,
verification, nets/, losses/, devices/."""
