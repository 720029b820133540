"""The network: L_Resnet_E_IR (the original's backbone, its depths and widths as data), its
layers with the original's variable names, and the inference graph (images in, embeddings
out). May import data/."""
