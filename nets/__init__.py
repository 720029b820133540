"""The network: L_Resnet_E_IR (the original's backbone, its depths and widths as data), its
layers with the original's variable names, the inference graph (images in, embeddings out),
and what a checkpoint of it holds, read from its names. May import data/."""
